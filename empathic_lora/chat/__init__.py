"""`python chat.py`: the terminal and pipe front end (`repl`) over a `session`."""
