// flmm: the toolkit's command-line tool. Subcommands live one per file in this folder.
FLMMCommand.main()
