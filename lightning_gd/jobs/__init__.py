"""Jobs: what each command does, as one library function that a notebook, a callback or a web page can call
too. A job gets its networks from the zoo, runs a recipe, writes its reports and returns what it found; its
signature and docstring are also the command's options and help (`lightning_gd.cli`)."""
