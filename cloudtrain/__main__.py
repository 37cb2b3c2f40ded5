from cloudtrain.entrypoint import main

main()
