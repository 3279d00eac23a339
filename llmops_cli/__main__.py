from llmops_cli.cli.app import main

main()
