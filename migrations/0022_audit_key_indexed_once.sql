-- `audit_logs` kept two indexes on (community_id, id): 0009's for the admin
-- API's pages, newest first (`id DESC`), and 0010's unique constraint, which
-- lets a webhook delivery reference its audit row within its community. A
-- btree is read in either direction, so the unique one serves the pages as
-- well, and the other was a second write for every audit entry — one per
-- membership event, the busiest insert there is.
DROP INDEX audit_logs_community_id_idx;
