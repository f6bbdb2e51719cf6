"""syncflow: async, high-throughput extraction of Accelo and AwardCo."""
