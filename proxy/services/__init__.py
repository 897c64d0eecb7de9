"""What the routes do, apart from HTTP: relaying generations, conversation history."""
