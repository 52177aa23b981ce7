import ArgumentParser

/// The root command; add a subcommand by writing its file here and listing it below.
struct FLMMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flmm",
        abstract: "F-LMM in Swift: golden checks, checkpoints, caches, experiments.",
        subcommands: [
            VerifyGolden.self,
            Checkpoint.self,
            Cache.self,
            World.self,
            Results.self,
            Ground.self,
        ]
    )
}
