-- Every status and kind column accepts only the values its enum in `domain::types` names
-- (the enums' FromStr/Display are the other side; a test keeps them in step).
ALTER TABLE loans ADD CONSTRAINT loans_status_check CHECK (status IN ('active', 'paid', 'collections', 'written_off'));
ALTER TABLE installments ADD CONSTRAINT installments_status_check CHECK (status IN ('pending', 'overdue', 'paid', 'written_off'));
ALTER TABLE actions ADD CONSTRAINT actions_kind_check CHECK (kind IN ('notice', 'attempt'));
ALTER TABLE actions ADD CONSTRAINT actions_status_check CHECK (status IN ('pending', 'claimed', 'done', 'skipped', 'cancelled'));
ALTER TABLE attempts ADD CONSTRAINT attempts_kind_check CHECK (kind IN ('early', 'due', 'overdue', 'payday', 'manual'));
ALTER TABLE attempts ADD CONSTRAINT attempts_status_check CHECK (status IN ('submitted', 'unknown', 'succeeded', 'failed'));
ALTER TABLE attempts ADD CONSTRAINT attempts_class_check CHECK (class IS NULL OR class IN ('soft', 'hard', 'unknown'));
ALTER TABLE mandates ADD CONSTRAINT mandates_status_check CHECK (status IN ('active', 'invalid', 'revoked'));
ALTER TABLE notices ADD CONSTRAINT notices_kind_check CHECK (kind IN ('pre_due', 'overdue', 'paid', 'partial', 'failed', 'rebind'));
ALTER TABLE notices ADD CONSTRAINT notices_channel_check CHECK (channel IN ('sms', 'email'));
ALTER TABLE notices ADD CONSTRAINT notices_status_check CHECK (status IN ('pending', 'claimed', 'sending', 'sent', 'failed'));
ALTER TABLE recon_items ADD CONSTRAINT recon_items_outcome_check CHECK (outcome IN ('matched', 'ours_only', 'channel_only', 'amount_differs', 'status_differs', 'unresolved'));
ALTER TABLE recon_items ADD CONSTRAINT recon_items_case_status_check CHECK (case_status IS NULL OR case_status IN ('open', 'resolved'));
ALTER TABLE recon_items ADD CONSTRAINT recon_items_auto_fix_check CHECK (auto_fix IS NULL OR auto_fix IN ('resolved_succeeded', 'resolved_failed'));
ALTER TABLE refunds ADD CONSTRAINT refunds_kind_check CHECK (kind IN ('overpayment', 'erroneous'));
ALTER TABLE write_offs ADD CONSTRAINT write_offs_kind_check CHECK (kind IN ('policy', 'admin', 'residue'));
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_role_check CHECK (role IN ('viewer', 'collections', 'admin'));
