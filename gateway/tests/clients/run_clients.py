"""Drive a running mini-exchange with unmodified Binance client libraries,
changing only their base URL (API.md): binance-connector (Spot) and ccxt's
binance class. Called by gateway/tests/python_clients.rs with:

    run_clients.py BASE_URL KEY_A SECRET_A KEY_B SECRET_B

Trader A holds USDT, trader B holds BTC. Every step asserts what the
exchange answered; any failure exits non-zero with the reason.
"""

import sys
import traceback

from clientlib import ccxt_config, check


def connector(base, key_a, sec_a, key_b, sec_b):
    from binance.spot import Spot
    from binance.error import ClientError

    a = Spot(api_key=key_a, api_secret=sec_a, base_url=base)
    b = Spot(api_key=key_b, api_secret=sec_b, base_url=base)
    check(a.ping() == {}, "ping")
    check(a.time()["serverTime"] > 0, "time")
    info = a.exchange_info(symbol="BTCUSDT")
    check(info["symbols"][0]["symbol"] == "BTCUSDT", "exchangeInfo")
    # B rests a sell; A buys part of it (floats, as Python callers send).
    sell = b.new_order(symbol="BTCUSDT", side="SELL", type="LIMIT",
                       timeInForce="GTC", quantity=0.002, price=30000.0)
    check(sell["status"] == "NEW", f"sell status {sell}")
    depth = a.depth("BTCUSDT", limit=5)
    check(depth["asks"][0] == ["30000.00000000", "0.00200000"], f"depth {depth}")
    buy = a.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT",
                      timeInForce="GTC", quantity=0.001, price=30000)
    check(buy["status"] == "FILLED", f"buy {buy}")
    q = b.get_order("BTCUSDT", orderId=sell["orderId"])
    check(q["status"] == "PARTIALLY_FILLED", f"query {q}")
    opened = b.get_open_orders("BTCUSDT")
    check(any(o["orderId"] == sell["orderId"] for o in opened), "open orders")
    c = b.cancel_order("BTCUSDT", orderId=sell["orderId"])
    check(c["status"] == "CANCELED", f"cancel {c}")
    try:
        b.cancel_order("BTCUSDT", orderId=sell["orderId"])
        check(False, "second cancel accepted")
    except ClientError as e:
        check(e.error_code == -2011, f"second cancel code {e.error_code}")
    acct = a.account()
    bal = {x["asset"]: x for x in acct["balances"]}
    check(bal["BTC"]["free"] == "0.00099900", f"A BTC {bal['BTC']}")
    trades = a.my_trades("BTCUSDT")
    check(len(trades) == 1 and trades[0]["isBuyer"], f"my trades {trades}")
    try:
        a.new_order(symbol="BTCUSDT", side="BUY", type="LIMIT",
                    timeInForce="GTC", quantity=1000, price=30000)
        check(False, "overspend accepted")
    except ClientError as e:
        check(e.error_code == -2010, f"insufficient code {e.error_code}")
    print("binance-connector: ok")


def with_ccxt(base, key_a, sec_a, key_b, sec_b):
    import ccxt

    def make(key, secret):
        config, point = ccxt_config(key, secret, base)
        return point(ccxt.binance(config))

    a = make(key_a, sec_a)
    b = make(key_b, sec_b)
    markets = a.load_markets()
    check("BTC/USDT" in markets, "markets")
    m = markets["BTC/USDT"]
    check(m["active"], "market active")
    book = a.fetch_order_book("BTC/USDT", limit=5)
    check("bids" in book, "order book")
    sell = b.create_order("BTC/USDT", "limit", "sell", 0.002, 31000)
    check(sell["status"] == "open", f"ccxt sell {sell['status']}")
    fetched = b.fetch_order(sell["id"], "BTC/USDT")
    check(fetched["id"] == sell["id"], "fetch order")
    opened = b.fetch_open_orders("BTC/USDT")
    check(any(o["id"] == sell["id"] for o in opened), "open orders")
    buy = a.create_order("BTC/USDT", "limit", "buy", 0.001, 31000)
    check(buy["status"] == "closed" and buy["filled"] == 0.001, f"ccxt buy {buy}")
    canceled = b.cancel_order(sell["id"], "BTC/USDT")
    check(canceled["status"] == "canceled", f"ccxt cancel {canceled['status']}")
    bal = a.fetch_balance()
    check(bal["USDT"]["used"] == 0.0, f"balance {bal['USDT']}")
    trades = a.fetch_my_trades("BTC/USDT")
    check(len(trades) >= 2, f"ccxt trades {len(trades)}")
    try:
        a.create_order("BTC/USDT", "limit", "buy", 1000, 31000)
        check(False, "overspend accepted")
    except ccxt.InsufficientFunds:
        pass
    # ccxt truncates amounts to the LOT_SIZE step itself, so this arrives as
    # 0.00001 BTC: below the 5 USDT minimum notional (-1013, as on Binance).
    try:
        a.create_order("BTC/USDT", "limit", "buy", 0.000015, 31000)
        check(False, "below min notional accepted")
    except (ccxt.InvalidOrder, ccxt.BadRequest) as e:
        check("Filter failure: NOTIONAL" in str(e), f"min notional error {e}")
    print("ccxt: ok")


def main():
    base, ka, sa, kb, sb = sys.argv[1:6]
    failed = 0
    for name, fn in (("binance-connector", connector), ("ccxt", with_ccxt)):
        try:
            fn(base, ka, sa, kb, sb)
        except Exception:  # report every library's failure, then exit 1
            failed += 1
            print(f"{name}: FAILED", file=sys.stderr)
            traceback.print_exc()
    print(f"{2 - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
