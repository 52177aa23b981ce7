import ArgumentParser

/// `flmm world …`: the embedded ShapesWorld and its frozen models.
struct World: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "world",
        abstract: "ShapesWorld: pretrain and evaluate the frozen models (TinyVLM, TinySAM).",
        subcommands: [PretrainSAM.self, EvaluateSAM.self]
    )
}
