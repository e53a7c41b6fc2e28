"""Quality of generated crystals: sample metrics, matching, distributions, stability and the hit re-check."""
