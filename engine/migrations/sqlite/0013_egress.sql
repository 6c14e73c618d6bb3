-- Egress policies: what each sandbox may reach beyond the host (EgressPolicy as JSON). A sandbox
-- without a row may reach everything public.
CREATE TABLE egress_policies (
    sandbox_id TEXT PRIMARY KEY NOT NULL,
    body       TEXT NOT NULL
);
