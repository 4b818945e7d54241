"""Staff commands on the side: parsing and wording them, running them, the dead-letter desk."""
