from prevpos.cli import main

main()
