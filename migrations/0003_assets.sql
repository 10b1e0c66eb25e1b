-- 0003 asset management domain: assets, accounts, transactions (ledger),
-- balance_freezes, deposit_withdrawals.
--
-- Amounts are NUMERIC(38,18): 20 integer digits hold any u64 amount of base
-- units even for an asset with 0 decimals, 18 fractional digits hold any
-- asset precision up to 18. Never floating point.

CREATE TABLE assets (
    id                     BIGINT         PRIMARY KEY,
    symbol                 VARCHAR(16)    NOT NULL,
    name                   VARCHAR(64)    NOT NULL,
    type                   VARCHAR(16)    NOT NULL DEFAULT 'CRYPTO',
    decimals               SMALLINT       NOT NULL DEFAULT 8,
    is_active              BOOLEAN        NOT NULL DEFAULT TRUE,
    min_withdraw_amount    NUMERIC(38,18) NOT NULL DEFAULT 0,
    withdraw_fee           NUMERIC(38,18) NOT NULL DEFAULT 0,
    -- NULL: no daily limit beyond the KYC-level limits.
    daily_withdraw_limit   NUMERIC(38,18),
    required_confirmations INTEGER        NOT NULL DEFAULT 1,
    version                BIGINT         NOT NULL DEFAULT 0,
    created_at             TIMESTAMPTZ    NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ    NOT NULL DEFAULT now(),
    CONSTRAINT assets_symbol_key UNIQUE (symbol),
    CONSTRAINT assets_symbol_check CHECK (symbol ~ '^[A-Z0-9]{1,16}$'),
    CONSTRAINT assets_type_check CHECK (type IN ('CRYPTO', 'STABLECOIN', 'FIAT')),
    CONSTRAINT assets_decimals_check CHECK (decimals BETWEEN 0 AND 18),
    CONSTRAINT assets_amounts_check CHECK (
        min_withdraw_amount >= 0 AND withdraw_fee >= 0
        AND (daily_withdraw_limit IS NULL OR daily_withdraw_limit >= 0)),
    CONSTRAINT assets_required_confirmations_check CHECK (required_confirmations >= 0)
);
CREATE TRIGGER assets_updated_at BEFORE UPDATE ON assets
    FOR EACH ROW EXECUTE FUNCTION set_updated_at_and_version();

CREATE TABLE accounts (
    id                BIGINT         PRIMARY KEY,
    user_id           BIGINT         NOT NULL REFERENCES users (id) DEFERRABLE INITIALLY DEFERRED,
    asset_id          BIGINT         NOT NULL REFERENCES assets (id) DEFERRABLE INITIALLY DEFERRED,
    available_balance NUMERIC(38,18) NOT NULL DEFAULT 0,
    frozen_balance    NUMERIC(38,18) NOT NULL DEFAULT 0,
    version           BIGINT         NOT NULL DEFAULT 0,
    created_at        TIMESTAMPTZ    NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ    NOT NULL DEFAULT now(),
    CONSTRAINT accounts_user_id_asset_id_key UNIQUE (user_id, asset_id),
    CONSTRAINT accounts_balance_check CHECK (available_balance >= 0 AND frozen_balance >= 0)
);
-- Per-asset sums (conservation / reconciliation).
CREATE INDEX idx_accounts_asset_id ON accounts (asset_id);
CREATE TRIGGER accounts_updated_at BEFORE UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION set_updated_at_and_version();

-- Double-entry ledger. One row per change of ONE balance bucket of one
-- account: balance_type says which (AVAILABLE or FROZEN), amount is signed
-- (credit > 0, debit < 0), and balance_before + amount = balance_after.
-- A freeze is two rows (AVAILABLE -x, FROZEN +x); a fill is rows on both
-- parties' accounts plus the fee account.
CREATE TABLE transactions (
    id             BIGINT         PRIMARY KEY,
    user_id        BIGINT         NOT NULL,
    asset_id       BIGINT         NOT NULL,
    type           VARCHAR(24)    NOT NULL,
    balance_type   VARCHAR(16)    NOT NULL DEFAULT 'AVAILABLE',
    amount         NUMERIC(38,18) NOT NULL,
    balance_before NUMERIC(38,18) NOT NULL,
    balance_after  NUMERIC(38,18) NOT NULL,
    reference_type VARCHAR(24),
    reference_id   BIGINT,
    description    TEXT,
    created_at     TIMESTAMPTZ    NOT NULL DEFAULT now(),
    -- Acting operator for ADJUSTMENT and admin-driven rows; NULL otherwise.
    created_by     BIGINT         REFERENCES users (id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT transactions_account_fkey FOREIGN KEY (user_id, asset_id)
        REFERENCES accounts (user_id, asset_id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT transactions_type_check CHECK (type IN (
        'DEPOSIT', 'WITHDRAWAL', 'WITHDRAWAL_FEE', 'TRADE', 'TRADE_FEE', 'FEE_INCOME',
        'FREEZE', 'UNFREEZE', 'ADJUSTMENT', 'SETTLEMENT')),
    CONSTRAINT transactions_balance_type_check CHECK (balance_type IN ('AVAILABLE', 'FROZEN')),
    CONSTRAINT transactions_reference_type_check CHECK (reference_type IN (
        'ORDER', 'TRADE', 'DEPOSIT', 'WITHDRAWAL', 'FREEZE', 'ADJUSTMENT', 'SETTLEMENT')),
    CONSTRAINT transactions_reference_check CHECK ((reference_type IS NULL) = (reference_id IS NULL)),
    CONSTRAINT transactions_balance_consistency_check CHECK (balance_before + amount = balance_after),
    CONSTRAINT transactions_balance_nonnegative_check CHECK (balance_before >= 0 AND balance_after >= 0)
);
CREATE INDEX idx_transactions_user_asset ON transactions (user_id, asset_id, id);
CREATE INDEX idx_transactions_user_created_at ON transactions (user_id, created_at DESC);
CREATE INDEX idx_transactions_reference ON transactions (reference_type, reference_id);
CREATE INDEX idx_transactions_created_by ON transactions (created_by) WHERE created_by IS NOT NULL;

CREATE TABLE balance_freezes (
    id             BIGINT         PRIMARY KEY,
    user_id        BIGINT         NOT NULL,
    asset_id       BIGINT         NOT NULL,
    amount         NUMERIC(38,18) NOT NULL,
    reason         VARCHAR(24)    NOT NULL,
    reference_type VARCHAR(24),
    reference_id   BIGINT,
    status         VARCHAR(16)    NOT NULL DEFAULT 'ACTIVE',
    version        BIGINT         NOT NULL DEFAULT 0,
    created_at     TIMESTAMPTZ    NOT NULL DEFAULT now(),
    updated_at     TIMESTAMPTZ    NOT NULL DEFAULT now(),
    released_at    TIMESTAMPTZ,
    CONSTRAINT balance_freezes_account_fkey FOREIGN KEY (user_id, asset_id)
        REFERENCES accounts (user_id, asset_id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT balance_freezes_amount_check CHECK (amount > 0),
    CONSTRAINT balance_freezes_reason_check CHECK (reason IN ('ORDER', 'WITHDRAWAL', 'ADMIN', 'RISK')),
    CONSTRAINT balance_freezes_reference_type_check CHECK (reference_type IN (
        'ORDER', 'TRADE', 'DEPOSIT', 'WITHDRAWAL', 'FREEZE', 'ADJUSTMENT', 'SETTLEMENT')),
    CONSTRAINT balance_freezes_status_check CHECK (status IN ('ACTIVE', 'RELEASED')),
    CONSTRAINT balance_freezes_released_check CHECK ((status = 'RELEASED') = (released_at IS NOT NULL))
);
CREATE INDEX idx_balance_freezes_active ON balance_freezes (user_id, asset_id) WHERE status = 'ACTIVE';
CREATE INDEX idx_balance_freezes_reference ON balance_freezes (reference_type, reference_id);
CREATE TRIGGER balance_freezes_updated_at BEFORE UPDATE ON balance_freezes
    FOR EACH ROW EXECUTE FUNCTION set_updated_at_and_version();

-- Deposits and withdrawals.
--   DEPOSIT:    PENDING (confirmations < required) -> CONFIRMED (credited once)
--               PENDING -> FAILED | CANCELLED
--   WITHDRAWAL: PENDING (amount + fee frozen) -> APPROVED (admin; tx_hash set,
--               funds leave) -> CONFIRMED; APPROVED -> FAILED;
--               PENDING -> REJECTED (admin, unfrozen) | CANCELLED (user, unfrozen)
CREATE TABLE deposit_withdrawals (
    id                     BIGINT         PRIMARY KEY,
    user_id                BIGINT         NOT NULL REFERENCES users (id) DEFERRABLE INITIALLY DEFERRED,
    asset_id               BIGINT         NOT NULL REFERENCES assets (id) DEFERRABLE INITIALLY DEFERRED,
    type                   VARCHAR(16)    NOT NULL,
    amount                 NUMERIC(38,18) NOT NULL,
    fee                    NUMERIC(38,18) NOT NULL DEFAULT 0,
    status                 VARCHAR(16)    NOT NULL DEFAULT 'PENDING',
    tx_hash                VARCHAR(128),
    address                VARCHAR(256),
    confirmations          INTEGER        NOT NULL DEFAULT 0,
    required_confirmations INTEGER        NOT NULL DEFAULT 0,
    review_notes           TEXT,
    processed_by           BIGINT         REFERENCES users (id) DEFERRABLE INITIALLY DEFERRED,
    processed_at           TIMESTAMPTZ,
    version                BIGINT         NOT NULL DEFAULT 0,
    created_at             TIMESTAMPTZ    NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ    NOT NULL DEFAULT now(),
    CONSTRAINT deposit_withdrawals_type_check CHECK (type IN ('DEPOSIT', 'WITHDRAWAL')),
    CONSTRAINT deposit_withdrawals_status_check CHECK (status IN (
        'PENDING', 'APPROVED', 'CONFIRMED', 'REJECTED', 'FAILED', 'CANCELLED')),
    CONSTRAINT deposit_withdrawals_deposit_status_check
        CHECK (type = 'WITHDRAWAL' OR status IN ('PENDING', 'CONFIRMED', 'FAILED', 'CANCELLED')),
    CONSTRAINT deposit_withdrawals_amount_check CHECK (amount > 0 AND fee >= 0),
    CONSTRAINT deposit_withdrawals_confirmations_check
        CHECK (confirmations >= 0 AND required_confirmations >= 0)
);
-- (asset, tx_hash) identifies a deposit: re-posting it updates the row.
CREATE UNIQUE INDEX idx_deposit_withdrawals_deposit_tx
    ON deposit_withdrawals (asset_id, tx_hash) WHERE type = 'DEPOSIT' AND tx_hash IS NOT NULL;
CREATE INDEX idx_deposit_withdrawals_user ON deposit_withdrawals (user_id, created_at DESC);
CREATE INDEX idx_deposit_withdrawals_open
    ON deposit_withdrawals (type, created_at) WHERE status IN ('PENDING', 'APPROVED');
CREATE TRIGGER deposit_withdrawals_updated_at BEFORE UPDATE ON deposit_withdrawals
    FOR EACH ROW EXECUTE FUNCTION set_updated_at_and_version();
