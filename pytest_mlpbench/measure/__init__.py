"""What a run costs: the monitor, cgroups and the run record built from them."""
