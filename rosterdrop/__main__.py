from rosterdrop.cli import main

main()
