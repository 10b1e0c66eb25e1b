-- 0005 risk management and clearing/settlement domain: risk_rules,
-- risk_events, settlement_batches, settlement_details.

CREATE TABLE risk_rules (
    id          BIGINT       PRIMARY KEY,
    name        VARCHAR(100) NOT NULL,
    type        VARCHAR(32)  NOT NULL,
    -- Rule-specific settings, e.g. {"max_daily_volume": "100000"}.
    parameters  JSONB        NOT NULL,
    is_active   BOOLEAN      NOT NULL DEFAULT TRUE,
    description TEXT,
    version     BIGINT       NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT risk_rules_name_key UNIQUE (name),
    CONSTRAINT risk_rules_type_check CHECK (type IN (
        'ORDER_SIZE', 'ORDER_NOTIONAL', 'PRICE_BAND', 'ORDER_RATE', 'OPEN_ORDERS',
        'DAILY_VOLUME', 'DAILY_WITHDRAWAL', 'LARGE_WITHDRAWAL', 'LOGIN_FAILURE', 'SELF_TRADE', 'CUSTOM')),
    CONSTRAINT risk_rules_parameters_check CHECK (jsonb_typeof(parameters) = 'object')
);
CREATE TRIGGER risk_rules_updated_at BEFORE UPDATE ON risk_rules
    FOR EACH ROW EXECUTE FUNCTION set_updated_at_and_version();

-- A rule (or a built-in check, rule_id NULL) fired for a user (or globally,
-- user_id NULL). Lifecycle: OPEN -> ACKNOWLEDGED -> RESOLVED | DISMISSED.
CREATE TABLE risk_events (
    id          BIGINT      PRIMARY KEY,
    user_id     BIGINT      REFERENCES users (id) DEFERRABLE INITIALLY DEFERRED,
    rule_id     BIGINT      REFERENCES risk_rules (id) DEFERRABLE INITIALLY DEFERRED,
    type        VARCHAR(32) NOT NULL,
    level       VARCHAR(16) NOT NULL,
    details     JSONB       NOT NULL DEFAULT '{}'::jsonb,
    status      VARCHAR(16) NOT NULL DEFAULT 'OPEN',
    resolved_by BIGINT      REFERENCES users (id) DEFERRABLE INITIALLY DEFERRED,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at TIMESTAMPTZ,
    CONSTRAINT risk_events_type_check CHECK (type IN (
        'ORDER_SIZE', 'ORDER_NOTIONAL', 'PRICE_BAND', 'ORDER_RATE', 'OPEN_ORDERS',
        'DAILY_VOLUME', 'DAILY_WITHDRAWAL', 'LARGE_WITHDRAWAL', 'LOGIN_FAILURE', 'SELF_TRADE', 'CUSTOM')),
    CONSTRAINT risk_events_level_check CHECK (level IN ('LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
    CONSTRAINT risk_events_status_check CHECK (status IN ('OPEN', 'ACKNOWLEDGED', 'RESOLVED', 'DISMISSED')),
    CONSTRAINT risk_events_details_check CHECK (jsonb_typeof(details) = 'object'),
    CONSTRAINT risk_events_resolved_check
        CHECK ((status IN ('RESOLVED', 'DISMISSED')) = (resolved_at IS NOT NULL))
);
CREATE INDEX idx_risk_events_user_id ON risk_events (user_id, created_at DESC);
CREATE INDEX idx_risk_events_rule_id ON risk_events (rule_id) WHERE rule_id IS NOT NULL;
CREATE INDEX idx_risk_events_open ON risk_events (level, created_at) WHERE status IN ('OPEN', 'ACKNOWLEDGED');
CREATE TRIGGER risk_events_updated_at BEFORE UPDATE ON risk_events
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- One batch per UTC trading day: PENDING -> RUNNING -> COMPLETED | FAILED.
CREATE TABLE settlement_batches (
    id                    BIGINT         PRIMARY KEY,
    batch_date            DATE           NOT NULL,
    status                VARCHAR(16)    NOT NULL DEFAULT 'PENDING',
    total_trades          BIGINT         NOT NULL DEFAULT 0,
    total_volume          NUMERIC(48,18) NOT NULL DEFAULT 0,
    -- Reconciliation outcome (differences found, per-asset sums).
    reconciliation_result JSONB,
    error_message         TEXT,
    started_at            TIMESTAMPTZ,
    completed_at          TIMESTAMPTZ,
    version               BIGINT         NOT NULL DEFAULT 0,
    created_at            TIMESTAMPTZ    NOT NULL DEFAULT now(),
    updated_at            TIMESTAMPTZ    NOT NULL DEFAULT now(),
    CONSTRAINT settlement_batches_batch_date_key UNIQUE (batch_date),
    CONSTRAINT settlement_batches_status_check CHECK (status IN ('PENDING', 'RUNNING', 'COMPLETED', 'FAILED')),
    CONSTRAINT settlement_batches_totals_check CHECK (total_trades >= 0 AND total_volume >= 0)
);
CREATE TRIGGER settlement_batches_updated_at BEFORE UPDATE ON settlement_batches
    FOR EACH ROW EXECUTE FUNCTION set_updated_at_and_version();

-- Per batch, user and asset: traded amount, fees and the net movement
-- (signed: trade_amount is the signed flow, net_amount = trade_amount - fee_amount).
CREATE TABLE settlement_details (
    id           BIGINT         PRIMARY KEY,
    batch_id     BIGINT         NOT NULL REFERENCES settlement_batches (id) ON DELETE CASCADE
                                DEFERRABLE INITIALLY DEFERRED,
    user_id      BIGINT         NOT NULL REFERENCES users (id) DEFERRABLE INITIALLY DEFERRED,
    asset_id     BIGINT         NOT NULL REFERENCES assets (id) DEFERRABLE INITIALLY DEFERRED,
    trade_amount NUMERIC(48,18) NOT NULL DEFAULT 0,
    fee_amount   NUMERIC(48,18) NOT NULL DEFAULT 0,
    net_amount   NUMERIC(48,18) NOT NULL DEFAULT 0,
    created_at   TIMESTAMPTZ    NOT NULL DEFAULT now(),
    CONSTRAINT settlement_details_batch_user_asset_key UNIQUE (batch_id, user_id, asset_id),
    CONSTRAINT settlement_details_fee_check CHECK (fee_amount >= 0),
    CONSTRAINT settlement_details_net_check CHECK (net_amount = trade_amount - fee_amount)
);
CREATE INDEX idx_settlement_details_user_id ON settlement_details (user_id, asset_id);
