"""`wardfn bench`: cold-start and load benchmarks. At the top of the package, beside `cli`: it
assembles the host's parts the way the server does and measures them; nothing imports it."""
