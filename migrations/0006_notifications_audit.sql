-- 0006 notification and audit domain plus persister bookkeeping:
-- notification_templates, notifications, outbox_events, audit_logs,
-- persister_checkpoints.

CREATE TABLE notification_templates (
    id         BIGINT       PRIMARY KEY,
    name       VARCHAR(100) NOT NULL,
    type       VARCHAR(16)  NOT NULL,
    subject    VARCHAR(255),
    content    TEXT         NOT NULL,
    is_active  BOOLEAN      NOT NULL DEFAULT TRUE,
    created_at TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT notification_templates_name_key UNIQUE (name),
    CONSTRAINT notification_templates_type_check CHECK (type IN ('EMAIL', 'SMS', 'PUSH', 'WEBHOOK', 'IN_APP'))
);
CREATE TRIGGER notification_templates_updated_at BEFORE UPDATE ON notification_templates
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Notifications sent (or to send) to users. Partitioned monthly; no FKs
-- (partitioned, written by the activity writer).
-- Lifecycle: PENDING -> SENT -> READ; PENDING -> FAILED.
CREATE TABLE notifications (
    id            BIGINT       NOT NULL,
    user_id       BIGINT       NOT NULL,
    template_id   BIGINT,
    type          VARCHAR(16)  NOT NULL,
    title         VARCHAR(255),
    content       TEXT         NOT NULL,
    status        VARCHAR(16)  NOT NULL DEFAULT 'PENDING',
    sent_at       TIMESTAMPTZ,
    read_at       TIMESTAMPTZ,
    error_message TEXT,
    created_at    TIMESTAMPTZ  NOT NULL,
    updated_at    TIMESTAMPTZ  NOT NULL,
    PRIMARY KEY (id, created_at),
    CONSTRAINT notifications_type_check CHECK (type IN ('EMAIL', 'SMS', 'PUSH', 'WEBHOOK', 'IN_APP')),
    CONSTRAINT notifications_status_check CHECK (status IN ('PENDING', 'SENT', 'FAILED', 'READ'))
) PARTITION BY RANGE (created_at);
CREATE INDEX idx_notifications_user_created_at ON notifications (user_id, created_at DESC);
CREATE INDEX idx_notifications_pending ON notifications (created_at) WHERE status = 'PENDING';
CREATE TRIGGER notifications_updated_at BEFORE UPDATE ON notifications
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Transactional outbox: rows written in the same transaction as the state
-- they describe, relayed to a broker (NATS JetStream / Kafka) afterwards.
-- PENDING -> PROCESSED; PENDING -> FAILED after the retry budget is spent.
CREATE TABLE outbox_events (
    id             BIGINT      PRIMARY KEY,
    aggregate_type VARCHAR(32) NOT NULL,
    aggregate_id   BIGINT      NOT NULL,
    event_type     VARCHAR(100) NOT NULL,
    event_data     JSONB       NOT NULL,
    correlation_id VARCHAR(64),
    status         VARCHAR(16) NOT NULL DEFAULT 'PENDING',
    retry_count    INTEGER     NOT NULL DEFAULT 0,
    next_retry_at  TIMESTAMPTZ,
    last_error     TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed_at   TIMESTAMPTZ,
    CONSTRAINT outbox_events_aggregate_type_check CHECK (aggregate_type IN (
        'USER', 'ACCOUNT', 'ORDER', 'TRADE', 'DEPOSIT', 'WITHDRAWAL', 'KYC', 'ASSET',
        'TRADING_PAIR', 'RISK', 'SETTLEMENT', 'NOTIFICATION')),
    CONSTRAINT outbox_events_event_type_check CHECK (event_type ~ '^[A-Za-z][A-Za-z0-9_.]*$'),
    CONSTRAINT outbox_events_status_check CHECK (status IN ('PENDING', 'PROCESSED', 'FAILED')),
    CONSTRAINT outbox_events_retry_count_check CHECK (retry_count >= 0),
    CONSTRAINT outbox_events_processed_check CHECK ((status = 'PROCESSED') = (processed_at IS NOT NULL))
);
CREATE INDEX idx_outbox_events_pending ON outbox_events (next_retry_at NULLS FIRST, id) WHERE status = 'PENDING';
CREATE INDEX idx_outbox_events_aggregate ON outbox_events (aggregate_type, aggregate_id);

-- Who did what. user_id is the actor (NULL for the system); resource_id is
-- text because some resources are keyed by symbol.
CREATE TABLE audit_logs (
    id            BIGINT      NOT NULL,
    user_id       BIGINT,
    action        VARCHAR(64) NOT NULL,
    resource_type VARCHAR(32) NOT NULL,
    resource_id   VARCHAR(64),
    old_values    JSONB,
    new_values    JSONB,
    ip_address    INET,
    user_agent    TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (id, created_at),
    CONSTRAINT audit_logs_action_check CHECK (action ~ '^[A-Za-z][A-Za-z0-9_.:]*$'),
    CONSTRAINT audit_logs_resource_type_check CHECK (resource_type IN (
        'USER', 'ROLE', 'API_KEY', 'KYC', 'ASSET', 'TRADING_PAIR', 'ACCOUNT', 'ORDER', 'TRADE',
        'DEPOSIT', 'WITHDRAWAL', 'RISK_RULE', 'RISK_EVENT', 'SETTLEMENT', 'NOTIFICATION_TEMPLATE',
        'FEE', 'SYSTEM'))
) PARTITION BY RANGE (created_at);
CREATE INDEX idx_audit_logs_user_created_at ON audit_logs (user_id, created_at DESC);
CREATE INDEX idx_audit_logs_resource ON audit_logs (resource_type, resource_id, created_at DESC);
CREATE INDEX idx_audit_logs_created_at ON audit_logs (created_at DESC);

-- One row per persister writer: the last journal sequence number whose rows
-- are committed. Updated in the same transaction as the rows themselves.
CREATE TABLE persister_checkpoints (
    writer     TEXT        PRIMARY KEY,
    last_seq   BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT persister_checkpoints_last_seq_check CHECK (last_seq >= 0)
);
CREATE TRIGGER persister_checkpoints_updated_at BEFORE UPDATE ON persister_checkpoints
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
