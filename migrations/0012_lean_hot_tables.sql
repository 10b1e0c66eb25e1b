-- Lean hot tables: the ledger, freezes, orders, trades and the outbox take
-- about 19 of the 20 rows a trade writes, so every secondary index and
-- per-row check on them is paid 20 times per trade (in the persister's
-- catch-up profile B-tree maintenance was 45% of Postgres' CPU and the
-- deferred foreign-key checks of the ledger another 27%).
--
-- Kept: the design's indexes (idx_orders_price_side, idx_trades_created_at)
-- and the ones a query of ours uses: allOrders (idx_orders_user_pair_id),
-- myTrades (idx_trades_buyer / idx_trades_seller, which also serve
-- `orderId=` through their filter), the ticker's first trade
-- (idx_trades_pair_created_at), the user ledger and settlement's opening
-- balances (idx_transactions_user_asset), settlement's day scan (BRIN on
-- transactions.created_at), the outbox relay (idx_outbox_events_pending),
-- active freezes (idx_balance_freezes_active).
--
-- Dropped: secondary indexes no query of the exchange reads. Back-office
-- tools that need them can add them (CONCURRENTLY, on a replica if the
-- primary must keep up with the engine).
DROP INDEX idx_transactions_user_created_at;
DROP INDEX idx_transactions_reference;
DROP INDEX idx_balance_freezes_reference;
DROP INDEX idx_orders_user_created_at;
DROP INDEX idx_orders_client_order_id;
DROP INDEX idx_orders_open;
DROP INDEX idx_trades_pair_id;
DROP INDEX idx_trades_buy_order_id;
DROP INDEX idx_trades_sell_order_id;
DROP INDEX idx_outbox_events_aggregate;

-- The ledger and the freezes no longer check `accounts (user_id, asset_id)`
-- row by row (a key-share lock and an index probe per row at COMMIT). The
-- same writer upserts the account in the same transaction, the engine
-- never moves a balance of an account it does not hold, and
-- `mini-exchange reconcile` reports any ledger total without its account
-- (or the reverse) as a difference. Every other constraint of the ledger
-- (balance_before + amount = balance_after, non-negative balances, types)
-- stays.
ALTER TABLE transactions DROP CONSTRAINT transactions_account_fkey;
ALTER TABLE balance_freezes DROP CONSTRAINT balance_freezes_account_fkey;
