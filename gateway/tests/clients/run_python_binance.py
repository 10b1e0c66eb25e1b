"""Drive a running mini-exchange with python-binance, unmodified, pointed at
it the way its users point it at Binance's testnet or a proxy: the URL
class attributes (API_URL, WS_API_URL, BinanceSocketManager.STREAM_URL)
set before the clients are made. Called by gateway/tests/python_clients.rs
with:

    run_python_binance.py BASE_URL WS_URL KEY_A SECRET_A KEY_B SECRET_B

Trader A holds USDT, trader B holds BTC.

1. The synchronous `Client` over REST: exchange info, a resting sell, the
   book, a crossing buy, order queries, cancel (and the -2011 of a second
   cancel), balances, trades, klines, tickers, a test order, and the -2010
   of an overspend, as `BinanceAPIException`s.
2. The `AsyncClient` with a `BinanceSocketManager`: the trade socket, the
   100 ms diff-depth socket, a combined (multiplex) socket, and A's user
   socket (python-binance subscribes to it through the WebSocket API's
   `userDataStream.subscribe.signature`); orders placed and queried over
   the WebSocket API (`ws_create_order`, `ws_get_order`); the script waits
   (with deadlines, never fixed sleeps) for the trade, the diffs and A's
   executionReports and checks them. Then python-binance's
   `DepthCacheManager` (REST snapshot + diffs) must show two new orders
   and equal REST's book.

Prints "python-binance rest: ok", then one line starting with "SUMMARY "
(JSON) for the Rust side. Any failure exits non-zero with the reason.
"""

import asyncio
import json

from clientlib import DEADLINE_S, check, diffs_continue, script_main, step, until_gauge


def point_at(base, ws_url):
    """The class-level URLs python-binance formats at construction."""
    from binance.base_client import BaseClient
    from binance.ws.streams import BinanceSocketManager

    BaseClient.API_URL = base + "/api"
    BaseClient.WS_API_URL = ws_url + "/ws-api/v3"
    BinanceSocketManager.STREAM_URL = ws_url + "/"


def rest(key_a, sec_a, key_b, sec_b):
    from binance.client import Client
    from binance.exceptions import BinanceAPIException

    a = Client(key_a, sec_a, ping=False)
    b = Client(key_b, sec_b, ping=False)
    check(a.ping() == {}, "ping")
    check(a.get_server_time()["serverTime"] > 0, "time")
    sym = a.get_symbol_info("BTCUSDT")
    check(sym is not None and sym["status"] == "TRADING", f"symbol info {sym}")

    sell = b.order_limit_sell(symbol="BTCUSDT", quantity="0.002", price="30000")
    check(sell["status"] == "NEW", f"sell {sell}")
    # python-binance names every order it sends (SPOT_ORDER_PREFIX).
    check(sell["clientOrderId"].startswith("x-HNA2TXFJ"), f"client id {sell}")
    book = a.get_order_book(symbol="BTCUSDT", limit=5)
    check(book["asks"][0] == ["30000.00000000", "0.00200000"], f"book {book}")
    buy = a.order_limit_buy(symbol="BTCUSDT", quantity=0.001, price=30000)
    check(buy["status"] == "FILLED", f"buy {buy}")
    q = b.get_order(symbol="BTCUSDT", orderId=sell["orderId"])
    check(q["status"] == "PARTIALLY_FILLED" and q["executedQty"] == "0.00100000",
          f"query {q}")
    q2 = b.get_order(symbol="BTCUSDT", origClientOrderId=sell["clientOrderId"])
    check(q2["orderId"] == sell["orderId"], f"query by client id {q2}")
    opened = b.get_open_orders(symbol="BTCUSDT")
    check([o["orderId"] for o in opened] == [sell["orderId"]], f"open {opened}")
    c = b.cancel_order(symbol="BTCUSDT", orderId=sell["orderId"])
    check(c["status"] == "CANCELED", f"cancel {c}")
    try:
        b.cancel_order(symbol="BTCUSDT", orderId=sell["orderId"])
        check(False, "second cancel accepted")
    except BinanceAPIException as e:
        check(e.code == -2011, f"second cancel code {e.code} {e.message}")
    every = b.get_all_orders(symbol="BTCUSDT")
    check([o["status"] for o in every] == ["CANCELED"], f"all orders {every}")

    btc = a.get_asset_balance(asset="BTC")
    check(btc["free"] == "0.00099900", f"A BTC {btc}")
    usdt = a.get_asset_balance(asset="USDT")
    check(usdt["free"] == "99970.00000000", f"A USDT {usdt}")
    trades = a.get_my_trades(symbol="BTCUSDT")
    check(len(trades) == 1 and trades[0]["isBuyer"] and trades[0]["price"] == "30000.00000000",
          f"my trades {trades}")
    recent = a.get_recent_trades(symbol="BTCUSDT")
    check(len(recent) == 1 and recent[0]["qty"] == "0.00100000", f"recent {recent}")
    agg = a.get_aggregate_trades(symbol="BTCUSDT")
    check(len(agg) == 1 and agg[0]["p"] == "30000.00000000", f"aggTrades {agg}")
    kl = a.get_klines(symbol="BTCUSDT", interval=Client.KLINE_INTERVAL_1MINUTE, limit=10)
    check(len(kl) == 1 and kl[0][4] == "30000.00000000" and kl[0][8] == 1, f"klines {kl}")
    t24 = a.get_ticker(symbol="BTCUSDT")
    check(t24["lastPrice"] == "30000.00000000" and t24["count"] == 1, f"ticker {t24}")
    price = a.get_symbol_ticker(symbol="BTCUSDT")
    check(price == {"symbol": "BTCUSDT", "price": "30000.00000000"}, f"price {price}")
    bt = a.get_orderbook_ticker(symbol="BTCUSDT")
    check(bt["symbol"] == "BTCUSDT" and bt["askQty"] == "0.00000000", f"bookTicker {bt}")
    avg = a.get_avg_price(symbol="BTCUSDT")
    check(avg["price"] == "30000.00000000", f"avgPrice {avg}")
    check(a.create_test_order(symbol="BTCUSDT", side="BUY", type="LIMIT",
                              timeInForce="GTC", quantity="0.001", price="29000") == {},
          "test order")
    try:
        a.order_limit_buy(symbol="BTCUSDT", quantity="1000", price="30000")
        check(False, "overspend accepted")
    except BinanceAPIException as e:
        check(e.code == -2010, f"overspend code {e.code} {e.message}")
    try:
        a.order_limit_buy(symbol="BTCUSDT", quantity="0.0000001", price="30000")
        check(False, "dust accepted")
    except BinanceAPIException as e:
        check(e.code == -1013, f"lot size code {e.code} {e.message}")
    step("REST done")
    print("python-binance rest: ok", flush=True)


async def recv_until(sock, what, pred, timeout=DEADLINE_S):
    """Messages of `sock` until `pred` holds for one; all of them."""
    got = []
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        left = end - loop.time()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {what}; got {got}")
        try:
            m = await asyncio.wait_for(sock.recv(), left)
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; got {got}")
        if isinstance(m, dict) and m.get("e") == "error":
            raise AssertionError(f"socket error while waiting for {what}: {m}")
        got.append(m)
        if pred(m):
            return got


async def streams(base, key_a, sec_a, key_b, sec_b):
    from binance.async_client import AsyncClient
    from binance.ws.depthcache import DepthCacheManager
    from binance.ws.streams import BinanceSocketManager

    a = AsyncClient(key_a, sec_a)
    b = AsyncClient(key_b, sec_b)
    socks = []
    try:
        bm = BinanceSocketManager(a)
        trade_s = bm.trade_socket("BTCUSDT")
        depth_s = bm.depth_socket("BTCUSDT", interval=100)
        multi_s = bm.multiplex_socket(["btcusdt@trade", "btcusdt@bookTicker"])
        user_s = bm.user_socket()
        socks = [trade_s, depth_s, multi_s, user_s]
        ts, ds, ms, us = [await s.__aenter__() for s in socks]
        # The REST snapshot before any order: the diffs that follow
        # must continue its update id.
        step("sockets open")
        snap = await a.get_order_book(symbol="BTCUSDT", limit=100)
        sell = await b.ws_create_order(symbol="BTCUSDT", side="SELL", type="LIMIT",
                                       timeInForce="GTC", quantity="0.003", price="31000")
        check(sell["status"] == "NEW" and sell["clientOrderId"].startswith("x-HNA2TXFJ"),
              f"ws sell {sell}")
        buy = await a.ws_create_order(symbol="BTCUSDT", side="BUY", type="LIMIT",
                                      timeInForce="IOC", quantity="0.001", price="31000",
                                      newOrderRespType="FULL")
        check(buy["status"] == "FILLED" and len(buy["fills"]) == 1, f"ws buy {buy}")
        q = await b.ws_get_order(symbol="BTCUSDT", orderId=sell["orderId"])
        check(q["status"] == "PARTIALLY_FILLED", f"ws query {q}")

        step("orders placed over the WebSocket API")
        trades = await recv_until(ts, "the trade event",
                                  lambda m: m.get("e") == "trade")
        trade = trades[-1]
        check(trade["s"] == "BTCUSDT" and trade["p"] == "31000.00000000"
              and trade["q"] == "0.00100000" and trade["m"] is False,
              f"trade event {trade}")

        # Diff depth: U/u contiguous from the snapshot's lastUpdateId
        # to the resting remainder of the sell at 31000.
        diffs = await recv_until(
            ds, "the depth diff with the sell's remainder",
            lambda m: m.get("e") == "depthUpdate"
            and ["31000.00000000", "0.00200000"] in m["a"])
        diffs = [d for d in diffs if d.get("e") == "depthUpdate"]
        # Binance's local-book procedure from the REST snapshot.
        _, last = diffs_continue(diffs, snap["lastUpdateId"])

        step("trade and diffs received")
        combined = await recv_until(ms, "the trade on the combined stream",
                                    lambda m: m.get("stream") == "btcusdt@trade")
        check(combined[-1]["data"]["t"] == trade["t"], f"combined {combined[-1]}")

        step("combined stream received")
        reports = await recv_until(
            us, "A's FILLED executionReport",
            lambda m: m.get("e") == "executionReport" and m.get("X") == "FILLED")
        execs = [m for m in reports if m.get("e") == "executionReport"]
        check([m["x"] for m in execs] == ["NEW", "TRADE"], f"executionReports {execs}")
        check(execs[-1]["i"] == buy["orderId"] and execs[-1]["t"] == trade["t"],
              f"fill report {execs[-1]}")

        step("executionReports received")
        await b.ws_cancel_order(symbol="BTCUSDT", orderId=sell["orderId"])
        step("sell canceled")

        # DepthCacheManager: python-binance's own local book (REST snapshot
        # of 500 levels + the 100 ms diffs). Its socket is the fifth
        # subscription (the multiplex socket holds two).
        dcm = DepthCacheManager(a, "BTCUSDT", refresh_interval=None, ws_interval=100)
        async with dcm:
            await until_gauge(base, "mx_websocket_subscriptions", 5)
            await b.create_order(symbol="BTCUSDT", side="SELL", type="LIMIT",
                                 timeInForce="GTC", quantity="0.004", price="32000")
            await a.create_order(symbol="BTCUSDT", side="BUY", type="LIMIT",
                                 timeInForce="GTC", quantity="0.001", price="29000")
            loop = asyncio.get_running_loop()
            end = loop.time() + DEADLINE_S
            while True:
                check(loop.time() < end, "timed out waiting for the depth cache")
                dc = await asyncio.wait_for(dcm.recv(), end - loop.time())
                if (dc.get_asks()[:1] == [[32000.0, 0.004]]
                        and dc.get_bids()[:1] == [[29000.0, 0.001]]):
                    break
            book = await a.get_order_book(symbol="BTCUSDT", limit=100)

            def as_floats(side):
                return [[float(p), float(q)] for p, q in side]

            check(dc.get_asks() == as_floats(book["asks"])
                  and dc.get_bids() == as_floats(book["bids"]),
                  f"depth cache {dc.get_asks()} {dc.get_bids()} vs REST {book}")
        step("depth cache equals REST")
        print("SUMMARY " + json.dumps({
            "trade": trade,
            "snapshot_last_update_id": snap["lastUpdateId"],
            "diffs": len(diffs),
            "last_u": last,
            "executions": execs,
            "sell_order_id": sell["orderId"],
        }), flush=True)
    finally:
        # python-binance stops a socket's reader at its next message or
        # after its 10 s read timeout; on a quiet book that is the timeout,
        # so close everything at once (one wait instead of six).
        # The user socket first: it unsubscribes over A's WebSocket API
        # connection, which close_connection ends.
        step("closing")
        for s in socks[3:]:
            await s.__aexit__(None, None, None)
        await asyncio.gather(*(s.__aexit__(None, None, None) for s in socks[:3]),
                             a.close_connection(), b.close_connection())


def main(base, ws_url, key_a, sec_a, key_b, sec_b):
    point_at(base, ws_url)
    rest(key_a, sec_a, key_b, sec_b)
    asyncio.run(streams(base, key_a, sec_a, key_b, sec_b))


if __name__ == "__main__":
    script_main(main)
