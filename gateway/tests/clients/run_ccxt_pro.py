"""Drive a running mini-exchange with ccxt.pro's `binance` class, unmodified:
the same options and REST URLs as the ccxt REST test, plus its two
WebSocket URLs (`urls['api']['ws']['spot']` for market streams,
`urls['api']['ws']['ws-api']['spot']` for the WebSocket API). Called by
gateway/tests/python_clients.rs with:

    run_ccxt_pro.py BASE_URL WS_URL KEY_A SECRET_A KEY_B SECRET_B

Trader A holds USDT, trader B holds BTC. A watches the BTC/USDT order book
(ccxt keeps it from the 100 ms diff stream and a REST snapshot of 1,000
levels), the trades, the 24 h ticker, 1 m candles, its own orders and its
balance (user data over the
WebSocket API's `userDataStream.subscribe.signature`); B rests a sell and A buys part of it,
both with `create_order_ws` (`order.place`). The script waits (with
deadlines, never fixed sleeps: market subscriptions are awaited on the
server's `mx_websocket_subscriptions` gauge, since ccxt does not wait for
SUBSCRIBE replies) until ccxt's local book, trades, ticker, candles,
orders and balance show it all.

Prints one line starting with "SUMMARY " (JSON) for the Rust side. Any
failure exits non-zero with the reason.
"""

import asyncio
import json

from clientlib import DEADLINE_S, ccxt_config, check, script_main, step, until_gauge


async def until_state(what, read, pred):
    """Poll one of ccxt.pro's caches (`orderbooks`, `orders`, `balance`)
    until `pred` holds: a watch_* call resolves only at the next update,
    so an update that came before the call would be waited for in vain."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE_S
    while True:
        last = read()
        if last is not None and pred(last):
            return last
        check(loop.time() < end, f"timed out waiting for {what}; last {last}")
        await asyncio.sleep(0.02)


async def run(base, ws_url, key_a, sec_a, key_b, sec_b):
    import ccxt.pro as ccxtpro

    def make(key, secret):
        config, point = ccxt_config(key, secret, base)
        ex = point(ccxtpro.binance(config))
        ex.urls["api"]["ws"]["spot"] = ws_url + "/ws"
        ex.urls["api"]["ws"]["ws-api"]["spot"] = ws_url + "/ws-api/v3"
        return ex

    a, b = make(key_a, sec_a), make(key_b, sec_b)
    try:
        await a.load_markets()
        await b.load_markets()
        # ccxt waits for this subscription's reply, so A's orders are
        # followed from here on.
        await a.ensure_user_data_stream_ws_subscribe_signature("spot")
        balance_first = asyncio.ensure_future(a.watch_balance())
        orders_first = asyncio.ensure_future(a.watch_orders("BTC/USDT"))
        trades_first = asyncio.ensure_future(a.watch_trades("BTC/USDT"))
        ticker_first = asyncio.ensure_future(a.watch_ticker("BTC/USDT"))
        ohlcv_first = asyncio.ensure_future(a.watch_ohlcv("BTC/USDT", "1m"))
        book = await asyncio.wait_for(a.watch_order_book("BTC/USDT"), DEADLINE_S)
        check(book["asks"] == [] and book["bids"] == [], f"empty book {book}")
        # trade, depth@100ms, ticker, kline_1m
        await until_gauge(base, "mx_websocket_subscriptions", 4)
        step("watching the book, trades, ticker, candles, A's orders and balance")

        sell = await b.create_order_ws("BTC/USDT", "limit", "sell", 0.003, 31000)
        check(sell["status"] == "open", f"ws sell {sell}")
        await until_state("the sell in A's book", lambda: a.orderbooks.get("BTC/USDT"),
                          lambda ob: ob["asks"][:1] == [[31000.0, 0.003]])
        rested = await b.fetch_order(sell["id"], "BTC/USDT")
        check(rested["status"] == "open", f"sell over REST {rested}")
        buy = await a.create_order_ws("BTC/USDT", "limit", "buy", 0.001, 31000,
                                      {"timeInForce": "IOC"})
        check(buy["status"] == "closed" and buy["filled"] == 0.001, f"ws buy {buy}")
        step("orders placed over the WebSocket API")

        trades = await asyncio.wait_for(trades_first, DEADLINE_S)
        check(len(trades) == 1 and trades[0]["price"] == 31000.0
              and trades[0]["amount"] == 0.001, f"trades {trades}")
        ob = await until_state("the sell's remainder in A's book",
                               lambda: a.orderbooks.get("BTC/USDT"),
                               lambda ob: ob["asks"][:1] == [[31000.0, 0.002]])
        # The 24 h ticker and the 1 m candle of that one trade.
        ticker = await asyncio.wait_for(ticker_first, DEADLINE_S)
        ticker = await until_state("the ticker's trade", lambda: a.tickers.get("BTC/USDT"),
                                   lambda t: t["last"] == 31000.0)
        check(ticker["baseVolume"] == 0.001 and ticker["quoteVolume"] == 31.0,
              f"ticker {ticker}")
        await asyncio.wait_for(ohlcv_first, DEADLINE_S)
        candles = await until_state(
            "the 1m candle", lambda: a.ohlcvs.get("BTC/USDT", {}).get("1m"),
            lambda cs: len(cs) > 0 and cs[-1][5] == 0.001)
        rest_kl = await a.fetch_ohlcv("BTC/USDT", "1m", limit=5)
        check(list(candles[-1]) == rest_kl[-1], f"candle {candles[-1]} vs REST {rest_kl}")
        rest_book = await a.fetch_order_book("BTC/USDT", limit=5)
        check(ob["asks"] == rest_book["asks"] and ob["bids"] == rest_book["bids"],
              f"local book {ob['asks']} {ob['bids']} vs REST {rest_book}")
        await asyncio.wait_for(orders_first, DEADLINE_S)
        orders = await until_state(
            "A's buy closed on the user data stream", lambda: a.orders,
            lambda os: any(o["id"] == buy["id"] and o["status"] == "closed" for o in os))
        mine = [o for o in orders if o["id"] == buy["id"]][-1]
        check(mine["filled"] == 0.001 and mine["cost"] == 31.0, f"watched order {mine}")
        await asyncio.wait_for(balance_first, DEADLINE_S)
        bal = await until_state(
            "A's BTC from outboundAccountPosition", lambda: a.balance.get("spot"),
            lambda b: b.get("BTC", {}).get("free") == 0.000999)
        check(bal["USDT"]["free"] == 99969.0, f"watched USDT {bal['USDT']}")
        step("book, trade and order seen")
        print("SUMMARY " + json.dumps({
            "trade_id": trades[0]["id"],
            "buy_id": buy["id"],
            "sell_id": sell["id"],
            "nonce": ob["nonce"],
            "asks": ob["asks"],
            "order_status": mine["status"],
            "candle": list(candles[-1]),
        }), flush=True)
    finally:
        step("closing")
        await a.close()
        await b.close()


def main(base, ws_url, key_a, sec_a, key_b, sec_b):
    asyncio.run(run(base, ws_url, key_a, sec_a, key_b, sec_b))


if __name__ == "__main__":
    script_main(main)
