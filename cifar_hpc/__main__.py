from cifar_hpc.cli import main

main()
