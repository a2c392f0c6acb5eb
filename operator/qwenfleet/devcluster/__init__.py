"""The local real control plane built from Go modules, kwok GPU nodes, and the simulated fleet."""
