-- 0007 reporting views.

-- Balances per user and asset.
CREATE VIEW user_balances AS
SELECT a.user_id,
       u.username,
       a.asset_id,
       s.symbol,
       a.available_balance                    AS available,
       a.frozen_balance                       AS frozen,
       a.available_balance + a.frozen_balance AS total,
       a.updated_at
FROM accounts a
JOIN users u ON u.id = a.user_id
JOIN assets s ON s.id = a.asset_id;

-- Per pair: configuration, the 24h ticker (NULLs / 0 before the first trade)
-- and the all-time trade count from the trades table.
CREATE VIEW trading_pair_stats AS
SELECT p.id                                AS trading_pair_id,
       p.symbol,
       p.status,
       b.symbol                            AS base_asset,
       q.symbol                            AS quote_asset,
       t.close_price                       AS last_price,
       t.open_price,
       t.high_price,
       t.low_price,
       COALESCE(t.volume, 0)               AS volume_24h,
       COALESCE(t.quote_volume, 0)         AS quote_volume_24h,
       t.price_change,
       t.price_change_percent,
       COALESCE(t.trades_count, 0)         AS trades_count_24h,
       tc.total_trades,
       t.updated_at                        AS ticker_updated_at
FROM trading_pairs p
JOIN assets b ON b.id = p.base_asset_id
JOIN assets q ON q.id = p.quote_asset_id
LEFT JOIN ticker_24hr t ON t.trading_pair_id = p.id
CROSS JOIN LATERAL (
    SELECT count(*) AS total_trades FROM trades tr WHERE tr.trading_pair_id = p.id
) tc;
