"""Data: windows of batches, snapshots, contracts, validation, profiles and traffic."""
