"""Trade over the WebSocket API with binance-connector's unmodified
SpotWebsocketAPIClient, changing only its stream URL. Called by
gateway/tests/python_clients.rs with:

    run_connector_wsapi.py BASE_URL WS_URL KEY_A SECRET_A KEY_B SECRET_B

Trader A holds USDT, trader B holds BTC. Every request carries an id of
ours; the script waits (with deadlines) for the reply with that id and
checks it: market data, a resting sell, a crossing buy with fills, order
status and open orders, cancel-replace, cancel and the -2011 of a second
cancel, the -2010 of an overspend, account, trades, order history, a test
order, cancel-all and a listen key. Prints "binance-connector ws-api: ok",
then one line starting with "SUMMARY " (JSON) for the Rust side. Any
failure exits non-zero with the reason.
"""

import json
import sys
import traceback

from clientlib import Inbox, check


def main(ws_url, key_a, sec_a, key_b, sec_b):
    from binance.websocket.spot.websocket_api import SpotWebsocketAPIClient

    def client(key, secret, inbox):
        return SpotWebsocketAPIClient(stream_url=ws_url + "/ws-api/v3", api_key=key,
                                      api_secret=secret, on_message=inbox.on_message,
                                      on_error=inbox.on_error)

    ia, ib = Inbox(), Inbox()
    a, b = client(key_a, sec_a, ia), client(key_b, sec_b, ib)
    n = [0]

    def call(inbox, method, **params):
        """Send with our own id; the reply to it (status 200 or an error)."""
        n[0] += 1
        rid = f"{method.__name__}-{n[0]}"
        method(id=rid, **params)
        got = inbox.wait(f"the reply to {rid}",
                         lambda ms: [m for m in ms if m.get("id") == rid])
        return got[0]

    def ok(inbox, method, **params):
        r = call(inbox, method, **params)
        check(r.get("status") == 200 and "result" in r, f"{method.__name__}: {r}")
        return r["result"]

    try:
        check(ok(ia, a.ping_connectivity) == {}, "ping")
        check(ok(ia, a.server_time)["serverTime"] > 0, "time")
        # Its exchange_info counts our id as a second filter and refuses:
        # sent with the symbol only, its reply is the one with "symbols".
        a.exchange_info(symbol="BTCUSDT")
        info = ia.wait("the exchangeInfo reply", lambda ms: [
            m for m in ms if isinstance(m.get("result"), dict) and "symbols" in m["result"]])
        info = info[0]["result"]
        check([x["symbol"] for x in info["symbols"]] == ["BTCUSDT"], f"exchangeInfo {info}")

        sell = ok(ib, b.new_order, symbol="BTCUSDT", side="SELL", type="LIMIT",
                  timeInForce="GTC", quantity=0.002, price=30000)
        check(sell["status"] == "NEW", f"sell {sell}")
        book = ok(ia, a.order_book, symbol="BTCUSDT", limit=5)
        check(book["asks"] == [["30000.00000000", "0.00200000"]], f"depth {book}")
        buy = ok(ia, a.new_order, symbol="BTCUSDT", side="BUY", type="LIMIT",
                 timeInForce="GTC", quantity=0.001, price=30000, newOrderRespType="FULL")
        check(buy["status"] == "FILLED" and len(buy["fills"]) == 1
              and buy["fills"][0]["price"] == "30000.00000000", f"buy {buy}")
        q = ok(ib, b.get_order, symbol="BTCUSDT", orderId=sell["orderId"])
        check(q["status"] == "PARTIALLY_FILLED", f"order.status {q}")
        opened = ok(ib, b.get_open_orders, symbol="BTCUSDT")
        check([o["orderId"] for o in opened] == [sell["orderId"]], f"open {opened}")

        # Move the remainder up: cancel-replace, then cancel, then again.
        cr = ok(ib, b.cancel_replace_order, symbol="BTCUSDT",
                cancelReplaceMode="STOP_ON_FAILURE", side="SELL", type="LIMIT",
                cancelOrderId=sell["orderId"], timeInForce="GTC", quantity=0.001,
                price=30500)
        check(cr["cancelResult"] == "SUCCESS" and cr["newOrderResult"] == "SUCCESS"
              and cr["newOrderResponse"]["status"] == "NEW", f"cancelReplace {cr}")
        moved = cr["newOrderResponse"]["orderId"]
        c = ok(ib, b.cancel_order, symbol="BTCUSDT", orderId=moved)
        check(c["status"] == "CANCELED", f"cancel {c}")
        again = call(ib, b.cancel_order, symbol="BTCUSDT", orderId=moved)
        check(again.get("status") == 400 and again["error"]["code"] == -2011,
              f"second cancel {again}")
        over = call(ia, a.new_order, symbol="BTCUSDT", side="BUY", type="LIMIT",
                    timeInForce="GTC", quantity=1000, price=30000)
        check(over.get("status") == 400 and over["error"]["code"] == -2010,
              f"overspend {over}")

        acct = ok(ia, a.account)
        bal = {x["asset"]: x for x in acct["balances"]}
        check(bal["BTC"]["free"] == "0.00099900", f"A BTC {bal['BTC']}")
        mine = ok(ia, a.my_trades, symbol="BTCUSDT")
        check(len(mine) == 1 and mine[0]["isBuyer"], f"myTrades {mine}")
        hist = ok(ib, b.order_history, symbol="BTCUSDT")
        check([o["status"] for o in hist] == ["CANCELED", "CANCELED"], f"allOrders {hist}")
        t24 = ok(ia, a.ticker_24hr, symbol="BTCUSDT")
        check(t24["lastPrice"] == "30000.00000000" and t24["count"] == 1, f"24hr {t24}")
        kl = ok(ia, a.klines, symbol="BTCUSDT", interval="1m")
        check(len(kl) == 1 and kl[0][4] == "30000.00000000", f"klines {kl}")
        check(ok(ia, a.avg_price, symbol="BTCUSDT")["price"] == "30000.00000000", "avgPrice")
        check(ok(ia, a.new_order_test, symbol="BTCUSDT", side="BUY", type="LIMIT",
                 timeInForce="GTC", quantity=0.001, price=29000) == {}, "order.test")

        # Two resting bids, then cancel-all.
        for price in (29000, 28000):
            ok(ia, a.new_order, symbol="BTCUSDT", side="BUY", type="LIMIT",
               timeInForce="GTC", quantity=0.001, price=price)
        gone = ok(ia, a.cancel_open_orders, symbol="BTCUSDT")
        check(sorted(o["price"] for o in gone) == ["28000.00000000", "29000.00000000"]
              and all(o["status"] == "CANCELED" for o in gone), f"cancelAll {gone}")
        key = ok(ia, a.user_data_start)["listenKey"]
        check(len(key) >= 16, f"listen key {key}")
        print("binance-connector ws-api: ok", flush=True)
        print("SUMMARY " + json.dumps({
            "buy_order_id": buy["orderId"],
            "trade_id": buy["fills"][0]["tradeId"],
            "moved_order_id": moved,
            "listen_key": key,
        }), flush=True)
    finally:
        a.stop()
        b.stop()


if __name__ == "__main__":
    try:
        main(*sys.argv[2:7])
    except Exception:
        traceback.print_exc()
        sys.exit(1)
