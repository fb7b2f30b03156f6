-- One eligibility check per member at a time, across every worker process.
-- A check takes a short lease on the profile before reading its state and
-- releases it after writing; a concurrent check for the same member waits
-- (interactive) or skips it (periodic scan). A lease, not a lock: no
-- transaction stays open while Discord and the chain are called, and a
-- crashed worker's lease simply expires.
ALTER TABLE profiles ADD COLUMN check_lease_until timestamptz;
