-- Jobs that outlive their launch (a Provider Access request may take a business day) are
-- found again by what they are about: `ehr|patient|plan`, never by a launch.
ALTER TABLE jobs ADD COLUMN subject TEXT;
CREATE INDEX jobs_subject ON jobs (kind, subject, created_at);
