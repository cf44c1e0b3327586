"""Reading inputs and writing outputs: storage, input forms, sink and commit."""
