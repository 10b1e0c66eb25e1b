"""Drive a running mini-exchange with Binance's current official SDK,
binance-sdk-spot, unmodified: only its three configuration URLs
(`ConfigurationRestAPI.base_path`, `ConfigurationWebSocketAPI.stream_url`,
`ConfigurationWebSocketStreams.stream_url`) point here. Its responses are
pydantic models with strict types, so a field of the wrong JSON type fails
here. Called by gateway/tests/python_clients.rs with:

    run_binance_sdk.py BASE_URL WS_URL KEY_A SECRET_A KEY_B SECRET_B

Trader A holds USDT, trader B holds BTC.

1. REST (`rest_api`): exchange info, a resting sell, the book, a crossing
   buy, order queries, open orders, cancel (and the error of a second
   cancel), the account, trades and klines.
2. Streams (`websocket_streams`, on `/stream` with 36-character UUID
   request ids): trade and 100 ms diff depth; WebSocket API
   (`websocket_api`): `order.place`, `order.status`, `account.status` and
   A's user data through `userDataStream.subscribe.signature`. The script
   waits (with deadlines, never fixed sleeps) for the trade, the diffs and
   A's executionReports.

Prints "binance-sdk-spot rest: ok", then one line starting with "SUMMARY "
(JSON) for the Rust side. Any failure exits non-zero with the reason.
"""

import asyncio
import json

from clientlib import DEADLINE_S, check, diffs_continue, script_main, step


def rest(base, key_a, sec_a, key_b, sec_b):
    from binance_common.configuration import ConfigurationRestAPI
    from binance_common.errors import BadRequestError, ClientError
    from binance_sdk_spot.spot import Spot
    from binance_sdk_spot.rest_api.models import (
        KlinesIntervalEnum,
        NewOrderSideEnum,
        NewOrderTimeInForceEnum,
        NewOrderTypeEnum,
    )

    def client(key, secret):
        return Spot(config_rest_api=ConfigurationRestAPI(
            api_key=key, api_secret=secret, base_path=base)).rest_api

    a, b = client(key_a, sec_a), client(key_b, sec_b)
    a.ping()
    check(a.time().data().server_time > 0, "time")
    info = a.exchange_info(symbol="BTCUSDT").data()
    check(info.symbols[0].symbol == "BTCUSDT", f"exchangeInfo {info}")

    sell = b.new_order(symbol="BTCUSDT", side=NewOrderSideEnum["SELL"].value,
                       type=NewOrderTypeEnum["LIMIT"].value,
                       time_in_force=NewOrderTimeInForceEnum["GTC"].value,
                       quantity=0.002, price=30000.0).data()
    check(sell.status == "NEW", f"sell {sell}")
    depth = a.depth(symbol="BTCUSDT", limit=5).data()
    check(depth.asks[0] == ["30000.00000000", "0.00200000"], f"depth {depth}")
    buy = a.new_order(symbol="BTCUSDT", side=NewOrderSideEnum["BUY"].value,
                      type=NewOrderTypeEnum["LIMIT"].value,
                      time_in_force=NewOrderTimeInForceEnum["GTC"].value,
                      quantity=0.001, price=30000.0).data()
    check(buy.status == "FILLED", f"buy {buy}")
    q = b.get_order(symbol="BTCUSDT", order_id=sell.order_id).data()
    check(q.status == "PARTIALLY_FILLED" and q.executed_qty == "0.00100000", f"query {q}")
    opened = b.get_open_orders(symbol="BTCUSDT").data()
    check([o.order_id for o in opened] == [sell.order_id], f"open orders {opened}")
    c = b.delete_order(symbol="BTCUSDT", order_id=sell.order_id).data()
    check(c.status == "CANCELED", f"cancel {c}")
    try:
        b.delete_order(symbol="BTCUSDT", order_id=sell.order_id)
        check(False, "second cancel accepted")
    except (BadRequestError, ClientError) as e:
        check("Unknown order" in e.error_message, f"second cancel: {e.error_message}")
    acct = a.get_account().data()
    bal = {x.asset: x for x in acct.balances}
    check(bal["BTC"].free == "0.00099900", f"A BTC {bal['BTC']}")
    mine = a.my_trades(symbol="BTCUSDT").data()
    check(len(mine) == 1 and mine[0].is_buyer, f"my trades {mine}")
    kl = a.klines(symbol="BTCUSDT", interval=KlinesIntervalEnum["INTERVAL_1m"].value).data()
    check(len(kl) == 1 and kl[0][4] == "30000.00000000", f"klines {kl}")
    step("REST done")
    print("binance-sdk-spot rest: ok", flush=True)


class Inbox:
    """Stream messages (as dicts with Binance's keys), awaited with deadlines."""

    def __init__(self):
        self.msgs = []
        self.changed = asyncio.Event()

    def put(self, m):
        # User data events arrive as the oneOf wrapper the SDK routed by
        # their "e" (which it keeps only as the model's type): note it.
        kind = type(getattr(m, "actual_instance", None) or m).__name__
        d = m.to_dict() if hasattr(m, "to_dict") else dict(m)
        d.setdefault("_model", kind)
        self.msgs.append(d)
        self.changed.set()

    async def until(self, what, pred, timeout=DEADLINE_S):
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not any(pred(m) for m in self.msgs):
            left = end - loop.time()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}; got {self.msgs}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                pass
        return list(self.msgs)


async def streams(base, ws_url, key_a, sec_a, key_b, sec_b):
    from binance_common.configuration import (
        ConfigurationRestAPI,
        ConfigurationWebSocketAPI,
        ConfigurationWebSocketStreams,
    )
    from binance_sdk_spot.spot import Spot
    from binance_sdk_spot.websocket_api.models import (
        OrderPlaceSideEnum,
        OrderPlaceTimeInForceEnum,
        OrderPlaceTypeEnum,
    )
    from binance_sdk_spot.websocket_streams.models import DiffBookDepthUpdateSpeedEnum

    def api(key, secret):
        return Spot(config_ws_api=ConfigurationWebSocketAPI(
            api_key=key, api_secret=secret, stream_url=ws_url + "/ws-api/v3")).websocket_api

    market = Spot(config_ws_streams=ConfigurationWebSocketStreams(
        stream_url=ws_url)).websocket_streams
    rest_a = Spot(config_rest_api=ConfigurationRestAPI(
        api_key=key_a, api_secret=sec_a, base_path=base)).rest_api
    conns = []
    try:
        m_conn = await market.create_connection()
        conns.append(m_conn)
        a_conn = await api(key_a, sec_a).create_connection()
        conns.append(a_conn)
        b_conn = await api(key_b, sec_b).create_connection()
        conns.append(b_conn)

        trades, diffs, user = Inbox(), Inbox(), Inbox()
        t_stream = await m_conn.trade(symbol="btcusdt")
        t_stream.on("message", trades.put)
        d_stream = await m_conn.diff_book_depth(
            symbol="btcusdt",
            update_speed=DiffBookDepthUpdateSpeedEnum["UPDATE_SPEED_100ms"].value)
        d_stream.on("message", diffs.put)
        sub = await a_conn.user_data_stream_subscribe_signature()
        sub.stream.on("message", user.put)
        step("streams subscribed")

        snap = rest_a.depth(symbol="BTCUSDT", limit=100).data()
        sell = (await b_conn.order_place(
            symbol="BTCUSDT", side=OrderPlaceSideEnum["SELL"].value,
            type=OrderPlaceTypeEnum["LIMIT"].value,
            time_in_force=OrderPlaceTimeInForceEnum["GTC"].value,
            quantity=0.003, price=31000.0)).data().result
        check(sell.status == "NEW", f"ws sell {sell}")
        buy = (await a_conn.order_place(
            symbol="BTCUSDT", side=OrderPlaceSideEnum["BUY"].value,
            type=OrderPlaceTypeEnum["LIMIT"].value,
            time_in_force=OrderPlaceTimeInForceEnum["IOC"].value,
            quantity=0.001, price=31000.0)).data().result
        check(buy.status == "FILLED", f"ws buy {buy}")
        q = (await b_conn.order_status(symbol="BTCUSDT", order_id=sell.order_id)).data().result
        check(q.status == "PARTIALLY_FILLED", f"ws order.status {q}")
        acct = (await a_conn.account_status()).data().result
        bal = {x.asset: x.free for x in acct.balances}
        check(bal["BTC"] == "0.00199800", f"ws account.status BTC {bal}")
        step("orders placed over the WebSocket API")

        got = await trades.until("the trade event", lambda m: m.get("e") == "trade")
        trade = got[-1]
        check(trade["p"] == "31000.00000000" and trade["q"] == "0.00100000",
              f"trade event {trade}")
        got = await diffs.until(
            "the depth diff with the sell's remainder",
            lambda m: m.get("e") == "depthUpdate"
            and ["31000.00000000", "0.00200000"] in m["a"])
        kept, last = diffs_continue(got, snap.last_update_id)
        got = await user.until(
            "A's FILLED executionReport",
            lambda m: m["_model"] == "ExecutionReport" and m.get("X") == "FILLED")
        execs = [m for m in got if m["_model"] == "ExecutionReport"]
        check([m["x"] for m in execs] == ["NEW", "TRADE"], f"executionReports {execs}")
        check(execs[-1]["i"] == buy.order_id and execs[-1]["t"] == trade["t"],
              f"fill report {execs[-1]}")
        step("trade, diffs and executionReports received")
        print("SUMMARY " + json.dumps({
            "trade": trade,
            "diffs": len(kept),
            "last_u": last,
            "executions": execs,
            "sell_order_id": sell.order_id,
        }), flush=True)
    finally:
        step("closing")
        for c in conns:
            await c.close_connection(close_session=True)


def main(base, ws_url, key_a, sec_a, key_b, sec_b):
    rest(base, key_a, sec_a, key_b, sec_b)
    asyncio.run(streams(base, ws_url, key_a, sec_a, key_b, sec_b))


if __name__ == "__main__":
    script_main(main)
