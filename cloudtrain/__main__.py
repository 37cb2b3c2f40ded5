from cloudtrain.cli import main

main()
