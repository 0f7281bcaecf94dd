from vam.data.build import main

main()
