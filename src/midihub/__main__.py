from midihub.cli import main

main()
