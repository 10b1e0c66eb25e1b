-- 0004 order management and matching domain: trading_pairs, orders, trades,
-- klines, ticker_24hr.
--
-- orders, trades and klines are partitioned by month (see 0001). Their
-- primary keys include the partition key, as Postgres requires. They carry no
-- foreign keys: they are written by other persister writers than the
-- reference data (users, pairs, assets), which may lag behind them, and a
-- trade cannot reference an order's (id, created_at) key without carrying the
-- order's created_at. The engine guarantees the references; `reconcile`
-- checks them.

CREATE TABLE trading_pairs (
    id               BIGINT         PRIMARY KEY,
    symbol           VARCHAR(32)    NOT NULL,
    base_asset_id    BIGINT         NOT NULL REFERENCES assets (id) DEFERRABLE INITIALLY DEFERRED,
    quote_asset_id   BIGINT         NOT NULL REFERENCES assets (id) DEFERRABLE INITIALLY DEFERRED,
    status           VARCHAR(16)    NOT NULL DEFAULT 'TRADING',
    -- LOT_SIZE minQty / maxQty, in base asset units.
    min_order_amount NUMERIC(38,18) NOT NULL DEFAULT 0,
    max_order_amount NUMERIC(38,18),
    price_precision  SMALLINT       NOT NULL DEFAULT 8,
    amount_precision SMALLINT       NOT NULL DEFAULT 8,
    -- PRICE_FILTER tickSize, LOT_SIZE stepSize, NOTIONAL minNotional.
    tick_size        NUMERIC(38,18) NOT NULL,
    step_size        NUMERIC(38,18) NOT NULL,
    min_notional     NUMERIC(38,18) NOT NULL DEFAULT 0,
    maker_fee        NUMERIC(10,8)  NOT NULL DEFAULT 0.001,
    taker_fee        NUMERIC(10,8)  NOT NULL DEFAULT 0.001,
    version          BIGINT         NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ    NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ    NOT NULL DEFAULT now(),
    CONSTRAINT trading_pairs_symbol_key UNIQUE (symbol),
    CONSTRAINT trading_pairs_assets_key UNIQUE (base_asset_id, quote_asset_id),
    CONSTRAINT trading_pairs_symbol_check CHECK (symbol ~ '^[A-Z0-9]{2,32}$'),
    CONSTRAINT trading_pairs_distinct_assets_check CHECK (base_asset_id <> quote_asset_id),
    CONSTRAINT trading_pairs_status_check CHECK (status IN ('TRADING', 'HALT', 'CANCEL_ONLY')),
    CONSTRAINT trading_pairs_amounts_check CHECK (
        min_order_amount >= 0
        AND (max_order_amount IS NULL OR max_order_amount >= min_order_amount)
        AND tick_size > 0 AND step_size > 0 AND min_notional >= 0),
    CONSTRAINT trading_pairs_precision_check
        CHECK (price_precision BETWEEN 0 AND 18 AND amount_precision BETWEEN 0 AND 18),
    CONSTRAINT trading_pairs_fee_check CHECK (maker_fee >= 0 AND maker_fee < 1 AND taker_fee >= 0 AND taker_fee < 1)
);
CREATE INDEX idx_trading_pairs_quote_asset_id ON trading_pairs (quote_asset_id);
CREATE TRIGGER trading_pairs_updated_at BEFORE UPDATE ON trading_pairs
    FOR EACH ROW EXECUTE FUNCTION set_updated_at_and_version();

-- Orders. `amount` is the original quantity (Binance origQty; 0 for a MARKET
-- order placed by quote_order_qty), `price` is NULL for MARKET/STOP_LOSS/
-- TAKE_PROFIT. created_at is the journaled timestamp of the placing command.
CREATE TABLE orders (
    id                         BIGINT         NOT NULL,
    user_id                    BIGINT         NOT NULL,
    trading_pair_id            BIGINT         NOT NULL,
    client_order_id            VARCHAR(64),
    type                       VARCHAR(24)    NOT NULL,
    side                       VARCHAR(4)     NOT NULL,
    time_in_force              VARCHAR(3),
    amount                     NUMERIC(38,18) NOT NULL,
    price                      NUMERIC(38,18),
    stop_price                 NUMERIC(38,18),
    quote_order_qty            NUMERIC(38,18),
    remaining_amount           NUMERIC(38,18) NOT NULL,
    filled_amount              NUMERIC(38,18) NOT NULL DEFAULT 0,
    -- Binance cummulativeQuoteQty: sum of price x qty over fills.
    cumulative_quote_qty       NUMERIC(38,18) NOT NULL DEFAULT 0,
    average_price              NUMERIC(38,18),
    status                     VARCHAR(20)    NOT NULL DEFAULT 'NEW',
    self_trade_prevention_mode VARCHAR(16)    NOT NULL DEFAULT 'EXPIRE_MAKER',
    -- Engine reject reason (stable numeric code) when status = REJECTED.
    reject_reason              INTEGER,
    version                    BIGINT         NOT NULL DEFAULT 0,
    created_at                 TIMESTAMPTZ    NOT NULL,
    updated_at                 TIMESTAMPTZ    NOT NULL,
    PRIMARY KEY (id, created_at),
    CONSTRAINT orders_type_check CHECK (type IN (
        'LIMIT', 'MARKET', 'LIMIT_MAKER', 'STOP_LOSS', 'STOP_LOSS_LIMIT', 'TAKE_PROFIT', 'TAKE_PROFIT_LIMIT')),
    CONSTRAINT orders_side_check CHECK (side IN ('BUY', 'SELL')),
    CONSTRAINT orders_time_in_force_check CHECK (time_in_force IN ('GTC', 'IOC', 'FOK')),
    CONSTRAINT orders_status_check CHECK (status IN (
        'NEW', 'PARTIALLY_FILLED', 'FILLED', 'CANCELED', 'REJECTED', 'EXPIRED', 'EXPIRED_IN_MATCH')),
    CONSTRAINT orders_stp_mode_check
        CHECK (self_trade_prevention_mode IN ('NONE', 'EXPIRE_TAKER', 'EXPIRE_MAKER', 'EXPIRE_BOTH')),
    CONSTRAINT orders_amounts_check CHECK (
        amount >= 0 AND remaining_amount >= 0 AND filled_amount >= 0 AND cumulative_quote_qty >= 0
        AND (price IS NULL OR price > 0)
        AND (stop_price IS NULL OR stop_price > 0)
        AND (quote_order_qty IS NULL OR quote_order_qty > 0)
        AND (average_price IS NULL OR average_price > 0)),
    CONSTRAINT orders_limit_price_check
        CHECK (type NOT IN ('LIMIT', 'LIMIT_MAKER', 'STOP_LOSS_LIMIT', 'TAKE_PROFIT_LIMIT') OR price IS NOT NULL),
    CONSTRAINT orders_stop_price_check
        CHECK (type NOT IN ('STOP_LOSS', 'STOP_LOSS_LIMIT', 'TAKE_PROFIT', 'TAKE_PROFIT_LIMIT') OR stop_price IS NOT NULL)
) PARTITION BY RANGE (created_at);
-- Design index: book-side scans by pair/side/price.
CREATE INDEX idx_orders_price_side ON orders (trading_pair_id, side, price, created_at);
-- Binance allOrders / GET order by (user, symbol, orderId).
CREATE INDEX idx_orders_user_pair_id ON orders (user_id, trading_pair_id, id);
-- Native history across pairs.
CREATE INDEX idx_orders_user_created_at ON orders (user_id, created_at DESC);
CREATE INDEX idx_orders_client_order_id ON orders (user_id, client_order_id) WHERE client_order_id IS NOT NULL;
-- openOrders.
CREATE INDEX idx_orders_open ON orders (user_id, trading_pair_id)
    WHERE status IN ('NEW', 'PARTIALLY_FILLED');
CREATE TRIGGER orders_updated_at BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION set_updated_at_and_version();

-- Trades: one row per fill between a maker and a taker order.
CREATE TABLE trades (
    id                  BIGINT         NOT NULL,
    trading_pair_id     BIGINT         NOT NULL,
    buy_order_id        BIGINT         NOT NULL,
    sell_order_id       BIGINT         NOT NULL,
    buyer_user_id       BIGINT         NOT NULL,
    seller_user_id      BIGINT         NOT NULL,
    amount              NUMERIC(38,18) NOT NULL,
    price               NUMERIC(38,18) NOT NULL,
    -- price x amount, in quote asset units.
    quote_amount        NUMERIC(38,18) NOT NULL,
    buyer_fee           NUMERIC(38,18) NOT NULL DEFAULT 0,
    seller_fee          NUMERIC(38,18) NOT NULL DEFAULT 0,
    -- Fees are taken from the received asset: base for the buyer, quote for
    -- the seller.
    buyer_fee_asset_id  BIGINT         NOT NULL,
    seller_fee_asset_id BIGINT         NOT NULL,
    maker_side          VARCHAR(4)     NOT NULL,
    is_buyer_maker      BOOLEAN        GENERATED ALWAYS AS (maker_side = 'BUY') STORED,
    created_at          TIMESTAMPTZ    NOT NULL,
    PRIMARY KEY (id, created_at),
    CONSTRAINT trades_maker_side_check CHECK (maker_side IN ('BUY', 'SELL')),
    CONSTRAINT trades_amounts_check CHECK (
        amount > 0 AND price > 0 AND quote_amount >= 0 AND buyer_fee >= 0 AND seller_fee >= 0),
    CONSTRAINT trades_orders_check CHECK (buy_order_id <> sell_order_id)
) PARTITION BY RANGE (created_at);
-- Design index.
CREATE INDEX idx_trades_created_at ON trades (created_at DESC);
-- Public recent trades / aggTrades / historical by id.
CREATE INDEX idx_trades_pair_id ON trades (trading_pair_id, id);
CREATE INDEX idx_trades_pair_created_at ON trades (trading_pair_id, created_at);
-- myTrades for either party.
CREATE INDEX idx_trades_buyer ON trades (buyer_user_id, trading_pair_id, id);
CREATE INDEX idx_trades_seller ON trades (seller_user_id, trading_pair_id, id);
-- Fills of one order (FULL response, order detail).
CREATE INDEX idx_trades_buy_order_id ON trades (buy_order_id);
CREATE INDEX idx_trades_sell_order_id ON trades (sell_order_id);

-- Candles for the 16 Binance intervals; an open candle is updated in place.
CREATE TABLE klines (
    id                     BIGINT         NOT NULL,
    trading_pair_id        BIGINT         NOT NULL,
    interval               VARCHAR(3)     NOT NULL,
    open_time              TIMESTAMPTZ    NOT NULL,
    close_time             TIMESTAMPTZ    NOT NULL,
    open_price             NUMERIC(38,18) NOT NULL,
    high_price             NUMERIC(38,18) NOT NULL,
    low_price              NUMERIC(38,18) NOT NULL,
    close_price            NUMERIC(38,18) NOT NULL,
    volume                 NUMERIC(48,18) NOT NULL DEFAULT 0,
    quote_volume           NUMERIC(48,18) NOT NULL DEFAULT 0,
    trades_count           BIGINT         NOT NULL DEFAULT 0,
    taker_buy_volume       NUMERIC(48,18) NOT NULL DEFAULT 0,
    taker_buy_quote_volume NUMERIC(48,18) NOT NULL DEFAULT 0,
    updated_at             TIMESTAMPTZ    NOT NULL,
    PRIMARY KEY (id, open_time),
    CONSTRAINT klines_pair_interval_open_time_key UNIQUE (trading_pair_id, interval, open_time),
    CONSTRAINT klines_interval_check CHECK (interval IN (
        '1s', '1m', '3m', '5m', '15m', '30m', '1h', '2h', '4h', '6h', '8h', '12h', '1d', '3d', '1w', '1M')),
    CONSTRAINT klines_time_check CHECK (close_time > open_time),
    CONSTRAINT klines_prices_check CHECK (
        low_price > 0 AND low_price <= high_price
        AND open_price BETWEEN low_price AND high_price
        AND close_price BETWEEN low_price AND high_price),
    CONSTRAINT klines_volumes_check CHECK (
        volume >= 0 AND quote_volume >= 0 AND trades_count >= 0
        AND taker_buy_volume >= 0 AND taker_buy_quote_volume >= 0)
) PARTITION BY RANGE (open_time);
CREATE TRIGGER klines_updated_at BEFORE UPDATE ON klines
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- Rolling 24h statistics, one row per pair, overwritten by the market-data
-- writer. No FK to trading_pairs (different writer).
CREATE TABLE ticker_24hr (
    trading_pair_id      BIGINT         PRIMARY KEY,
    open_price           NUMERIC(38,18),
    high_price           NUMERIC(38,18),
    low_price            NUMERIC(38,18),
    close_price          NUMERIC(38,18),
    volume               NUMERIC(48,18) NOT NULL DEFAULT 0,
    quote_volume         NUMERIC(48,18) NOT NULL DEFAULT 0,
    price_change         NUMERIC(38,18),
    price_change_percent NUMERIC(24,8),
    trades_count         BIGINT         NOT NULL DEFAULT 0,
    first_trade_id       BIGINT,
    last_trade_id        BIGINT,
    open_time            TIMESTAMPTZ,
    close_time           TIMESTAMPTZ,
    updated_at           TIMESTAMPTZ    NOT NULL DEFAULT now(),
    CONSTRAINT ticker_24hr_volumes_check CHECK (volume >= 0 AND quote_volume >= 0 AND trades_count >= 0)
);
CREATE TRIGGER ticker_24hr_updated_at BEFORE UPDATE ON ticker_24hr
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
