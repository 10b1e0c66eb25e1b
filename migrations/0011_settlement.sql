-- 0011 daily settlement: what a batch needs beyond 0005's columns.
--
-- A batch is written by the persister (core writer) in the transaction of
-- the journal record that settled its UTC day (`Command::RunSettlement`):
-- one settlement_batches row and one settlement_details row per
-- (user, asset) that moved that day, computed from `transactions` (and the
-- day's `trades` for gross amounts and fees). See migrations/README.md
-- "Settlement".

ALTER TABLE settlement_batches
    -- Who asked (user 0: the exchange itself).
    ADD COLUMN requested_by     BIGINT REFERENCES users (id) DEFERRABLE INITIALLY DEFERRED,
    -- Journal sequence number of the command: every ledger row of the day
    -- has a smaller one.
    ADD COLUMN journal_seq      BIGINT,
    -- settlement_details rows of the batch.
    ADD COLUMN account_count    BIGINT NOT NULL DEFAULT 0,
    -- Reconciliation findings (0 = COMPLETED); listed in reconciliation_result.
    ADD COLUMN difference_count BIGINT NOT NULL DEFAULT 0,
    ADD CONSTRAINT settlement_batches_counts_check
        CHECK (account_count >= 0 AND difference_count >= 0),
    ADD CONSTRAINT settlement_batches_completed_check
        CHECK (status <> 'COMPLETED' OR difference_count = 0),
    ADD CONSTRAINT settlement_batches_failed_check
        CHECK (status <> 'FAILED' OR error_message IS NOT NULL);
CREATE UNIQUE INDEX idx_settlement_batches_journal_seq
    ON settlement_batches (journal_seq) WHERE journal_seq IS NOT NULL;

-- Per (user, asset): balances around the day and the day's movements by
-- kind. All amounts are in the asset's units; opening/closing are
-- available + frozen. 0005's columns keep their meaning: trade_amount is
-- the signed gross trade flow (bought - sold), fee_amount the trading fees
-- paid in this asset, net_amount = trade_amount - fee_amount.
ALTER TABLE settlement_details
    ADD COLUMN opening_balance       NUMERIC(48,18) NOT NULL DEFAULT 0,
    -- Received through trades, gross of fees.
    ADD COLUMN bought_amount         NUMERIC(48,18) NOT NULL DEFAULT 0,
    -- Given through trades.
    ADD COLUMN sold_amount           NUMERIC(48,18) NOT NULL DEFAULT 0,
    -- Trading and withdrawal fees received (the fee account).
    ADD COLUMN fee_income_amount     NUMERIC(48,18) NOT NULL DEFAULT 0,
    ADD COLUMN deposit_amount        NUMERIC(48,18) NOT NULL DEFAULT 0,
    -- Sent out by withdrawals, without their fees.
    ADD COLUMN withdrawal_amount     NUMERIC(48,18) NOT NULL DEFAULT 0,
    ADD COLUMN withdrawal_fee_amount NUMERIC(48,18) NOT NULL DEFAULT 0,
    -- Admin adjustments, signed.
    ADD COLUMN adjustment_amount     NUMERIC(48,18) NOT NULL DEFAULT 0,
    ADD COLUMN closing_balance       NUMERIC(48,18) NOT NULL DEFAULT 0,
    -- What the movements do not explain; 0 when the ledger reconciles.
    ADD COLUMN difference            NUMERIC(48,18) NOT NULL DEFAULT 0,
    ADD CONSTRAINT settlement_details_amounts_check CHECK (
        opening_balance >= 0 AND closing_balance >= 0 AND bought_amount >= 0
        AND sold_amount >= 0 AND fee_income_amount >= 0 AND deposit_amount >= 0
        AND withdrawal_amount >= 0 AND withdrawal_fee_amount >= 0),
    ADD CONSTRAINT settlement_details_trade_check CHECK (trade_amount = bought_amount - sold_amount),
    ADD CONSTRAINT settlement_details_difference_check CHECK (
        difference = closing_balance - (opening_balance + net_amount + fee_income_amount
            + deposit_amount - withdrawal_amount - withdrawal_fee_amount + adjustment_amount));
CREATE INDEX idx_settlement_details_batch_asset ON settlement_details (batch_id, asset_id, user_id);

-- A settlement reads one UTC day of the ledger. A BRIN index is a few
-- pages, costs next to nothing per insert, and fits the ledger: rows are
-- appended in journal order, so created_at follows the physical order.
CREATE INDEX idx_transactions_created_at_brin ON transactions USING brin (created_at);
