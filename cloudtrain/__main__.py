from cloudtrain.cli.entrypoint import main

main()
