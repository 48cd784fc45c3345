from tandem_dynamo.main import main

main()
