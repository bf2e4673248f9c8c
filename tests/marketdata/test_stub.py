from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import requests
from binance.client import Client

from conditions.engine.candles import frame_from_rows
from conditions.engine.timeframes import resample
from conditions.marketdata.stub import BinanceStub, run_stub
from conditions.marketdata.stub_endpoints import StubError, StubRequest, StubResponse
from tests.marketdata.conftest import DAY_START, ETH_FILE, FIVE_MINUTES, HOUR, KLINES_DIR


def get(stub: BinanceStub, path: str, **params: object) -> requests.Response:
    return requests.get(f"{stub.url}{path}", params=params, timeout=5)


def klines(stub: BinanceStub, **params: object) -> pd.DataFrame:
    response = get(stub, "/v3/klines", **params)
    assert response.status_code == 200, response.text
    return frame_from_rows(response.json())


def python_binance_client(stub: BinanceStub) -> Client:
    client = Client(ping=False)
    client.API_URL = stub.url
    return client


def test_it_serves_only_the_candles_opened_by_its_clock(stub, eth_candles):
    bar_open = DAY_START + 12 * HOUR
    served = klines(stub, symbol="ETHBTC", interval="5m", limit=1000)

    assert len(served) == 1000
    assert served["open_time"].iloc[-1] == bar_open
    assert (served["open_time"] <= stub.now_ms()).all()
    file_rows = eth_candles[eth_candles["open_time"] < bar_open].tail(999).reset_index(drop=True)
    pd.testing.assert_frame_equal(served.iloc[:-1].reset_index(drop=True), file_rows)

    stub.advance(FIVE_MINUTES)
    later = klines(stub, symbol="ETHBTC", interval="5m", limit=1000)
    assert later["open_time"].iloc[-1] == bar_open + FIVE_MINUTES
    assert later["open_time"].iloc[-2] == bar_open


def test_the_forming_candle_is_drawn_part_way_and_hides_its_final_values(stub, eth_candles):
    final = eth_candles.set_index("open_time").loc[DAY_START + 12 * HOUR]
    forming = klines(stub, symbol="ETHBTC", interval="5m", limit=1).iloc[-1]

    # Half-way through the bar: close half-way from open to the final close.
    assert forming["open"] == final["open"]
    assert forming["close"] == pytest.approx((final["open"] + final["close"]) / 2, abs=1e-8)
    assert forming["close"] != final["close"]
    assert max(forming["open"], forming["close"]) <= forming["high"] < final["high"]
    assert final["low"] < forming["low"] <= min(forming["open"], forming["close"])
    assert forming["volume"] == pytest.approx(final["volume"] / 2, abs=1e-8)

    stub.advance(FIVE_MINUTES // 2)
    closed = klines(stub, symbol="ETHBTC", interval="5m", limit=2).iloc[0]
    assert closed[["open", "high", "low", "close", "volume"]].tolist() == final.tolist()


def test_klines_read_through_python_binance_round_trip_the_file_values(stub, eth_candles):
    client = python_binance_client(stub)
    first_open = int(eth_candles["open_time"].iloc[0])

    rows = client.get_klines(symbol="ETHBTC", interval="5m", startTime=first_open, limit=1000)

    assert len(rows) == 1000
    assert all(len(row) == 12 and isinstance(row[1], str) for row in rows)
    assert rows[0][6] == first_open + FIVE_MINUTES - 1  # Binance's close time
    pd.testing.assert_frame_equal(frame_from_rows(rows), eth_candles.head(1000))
    assert client.get_server_time() == {"serverTime": stub.now_ms()}
    assert client.ping() == {}


def test_coarser_intervals_are_resampled_from_the_file_on_utc_boundaries(stub, eth_candles):
    now = stub.now_ms()
    closed_5m = eth_candles[eth_candles["open_time"] + FIVE_MINUTES <= now]

    hourly = klines(stub, symbol="ETHBTC", interval="1h", limit=1000)
    daily = klines(stub, symbol="ETHBTC", interval="1d", limit=1000)

    assert (hourly["open_time"] % HOUR == 0).all()
    assert (daily["open_time"] % (24 * HOUR) == 0).all()
    # Closed bars are exactly the file resampled; the last one is still forming.
    expected_hours = resample(closed_5m, "1h")
    pd.testing.assert_frame_equal(
        hourly.iloc[:-1].reset_index(drop=True), expected_hours, atol=1e-8
    )
    assert hourly["open_time"].iloc[-1] == DAY_START + 12 * HOUR
    expected_days = resample(closed_5m, "1d").iloc[:-1].reset_index(drop=True)
    pd.testing.assert_frame_equal(daily.iloc[:-1].reset_index(drop=True), expected_days, atol=1e-8)
    # The forming day holds the morning's candles and the forming 5m one part-way.
    forming_5m = klines(stub, symbol="ETHBTC", interval="5m", limit=1).iloc[-1]
    today = closed_5m[closed_5m["open_time"] >= DAY_START]
    assert daily["volume"].iloc[-1] == pytest.approx(today["volume"].sum() + forming_5m["volume"])
    assert daily["close"].iloc[-1] == forming_5m["close"]


def test_resampling_leaves_exchange_gaps_as_gaps():
    # UNITTESTBTC-1m has minutes missing; 15m bars are built from what exists.
    with run_stub(KLINES_DIR / "UNITTESTBTC-1m.csv", speed=0, start=1510700400000) as stub:
        minutes = klines(
            stub, symbol="UNITTESTBTC", interval="1m", startTime=1509836520000, limit=1000
        )
        quarters = klines(
            stub, symbol="UNITTESTBTC", interval="15m", startTime=1509836400000, limit=60
        )

    expected = resample(minutes, "15m").head(60)
    pd.testing.assert_frame_equal(quarters, expected, atol=1e-8)


def test_start_end_and_limit_select_candles_the_way_binance_does(stub, eth_candles):
    start = DAY_START
    assert len(klines(stub, symbol="ETHBTC", interval="5m")) == 500  # Binance's default limit

    from_start = klines(stub, symbol="ETHBTC", interval="5m", startTime=start + 1, limit=3)
    assert from_start["open_time"].tolist() == [start + FIVE_MINUTES * i for i in (1, 2, 3)]

    until_end = klines(stub, symbol="ETHBTC", interval="5m", endTime=start, limit=3)
    assert until_end["open_time"].tolist() == [start - FIVE_MINUTES * i for i in (2, 1, 0)]

    window = klines(stub, symbol="ETHBTC", interval="5m", startTime=start, endTime=start + HOUR - 1)
    assert len(window) == 12


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"symbol": "NOPEBTC", "interval": "5m"}, -1121),
        ({"symbol": "ETHBTC", "interval": "7m"}, -1120),
        ({"symbol": "ETHBTC", "interval": "1m"}, -1120),  # finer than the 5m file
        ({"interval": "5m"}, -1102),
        ({"symbol": "ETHBTC", "interval": "5m", "limit": 1001}, -1130),
        ({"symbol": "ETHBTC", "interval": "5m", "limit": "ten"}, -1100),
        ({"symbol": "ethbtc", "interval": "5m"}, -1100),
    ],
)
def test_bad_kline_requests_get_binance_errors(stub, params, code):
    response = get(stub, "/v3/klines", **params)

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert response.json()["msg"]
    assert "X-MBX-USED-WEIGHT-1M" in response.headers


def test_exchange_info_lists_the_file_symbols_as_trading_with_filters(stub):
    info = get(stub, "/v3/exchangeInfo").json()

    assert info["serverTime"] == stub.now_ms()
    by_symbol = {item["symbol"]: item for item in info["symbols"]}
    assert set(by_symbol) == {"ETHBTC", "LTCBTC"}
    eth = by_symbol["ETHBTC"]
    assert (eth["status"], eth["baseAsset"], eth["quoteAsset"]) == ("TRADING", "ETH", "BTC")
    filters = {item["filterType"]: item for item in eth["filters"]}
    assert float(filters["PRICE_FILTER"]["tickSize"]) == pytest.approx(1e-6)
    assert float(filters["LOT_SIZE"]["stepSize"]) == pytest.approx(1e-4)
    assert float(filters["NOTIONAL"]["minNotional"]) == pytest.approx(1e-4)


def test_used_weight_grows_within_a_stub_minute_and_resets_with_the_next(stub):
    stub.set_time(DAY_START + 12 * HOUR)  # the start of a minute
    weights = [
        int(get(stub, path, **params).headers["X-MBX-USED-WEIGHT-1M"])
        for path, params in [
            ("/v3/time", {}),
            ("/v3/klines", {"symbol": "ETHBTC", "interval": "5m", "limit": 50}),
            ("/v3/klines", {"symbol": "ETHBTC", "interval": "5m", "limit": 1000}),
            ("/v3/exchangeInfo", {}),
            ("/v3/klines", {"symbol": "NOPEBTC", "interval": "5m", "limit": 50}),
        ]
    ]
    assert weights == [1, 3, 13, 33, 35]

    stub.advance(60_000)
    assert get(stub, "/v3/ping").headers["X-MBX-USED-WEIGHT-1M"] == "1"


def test_an_enforced_weight_limit_answers_429_with_retry_after(market):
    with run_stub(market, speed=0, start=DAY_START, weight_limit=3) as stub:
        statuses = [get(stub, "/v3/time").status_code for _ in range(4)]
        refused = get(stub, "/v3/time")

    assert statuses == [200, 200, 200, 429]
    assert refused.json()["code"] == -1003
    assert int(refused.headers["Retry-After"]) >= 1


def test_faults_and_the_clock_can_be_driven_over_http(stub):
    control = stub.origin + "/_stub"
    requests.post(f"{control}/fault", json={"kind": "500"}, timeout=5).raise_for_status()
    requests.post(
        f"{control}/fault", json={"kind": "429", "retry_after": 7}, timeout=5
    ).raise_for_status()
    requests.post(f"{control}/fault", json={"kind": "drop"}, timeout=5).raise_for_status()

    assert get(stub, "/v3/time").status_code == 500
    too_many = get(stub, "/v3/time")
    assert (too_many.status_code, too_many.headers["Retry-After"]) == (429, "7")
    assert too_many.json()["code"] == -1003
    with pytest.raises(requests.ConnectionError):
        get(stub, "/v3/time")
    assert get(stub, "/v3/time").status_code == 200

    before = stub.now_ms()
    clock = requests.post(f"{control}/clock", json={"advance_ms": 90_000}, timeout=5).json()
    assert clock["serverTime"] == before + 90_000 == get(stub, "/v3/time").json()["serverTime"]
    requests.post(f"{control}/clock", json={"time": "2018-01-20T00:00:00Z"}, timeout=5)
    assert stub.now_ms() == 1516406400000
    assert requests.post(f"{control}/fault", json={"kind": "boom"}, timeout=5).status_code == 400

    logged = requests.get(f"{control}/requests", timeout=5).json()
    assert [entry["fault"] for entry in logged[:4]] == ["500", "429", "drop", None]


def test_faults_can_target_one_path_and_a_hang_ends_after_its_seconds(stub):
    stub.inject_fault("hang", seconds=0.3, path="/api/v3/klines")

    assert get(stub, "/v3/time").status_code == 200  # not the targeted path
    started = time.monotonic()
    answer = get(stub, "/v3/klines", symbol="ETHBTC", interval="5m", limit=1)
    assert answer.status_code == 200
    assert 0.3 <= time.monotonic() - started < 2


def test_the_clock_runs_at_the_configured_speed(market):
    with run_stub(market, speed=600, start=DAY_START) as stub:
        time.sleep(0.5)
        elapsed_ms = get(stub, "/v3/time").json()["serverTime"] - DAY_START

    assert 250_000 <= elapsed_ms <= 600_000  # 0.5 s at 600x is 300 s, plus scheduling slack


def test_new_endpoints_plug_into_the_route_table(stub):
    placed: dict[str, dict] = {}

    def place_order(request: StubRequest) -> StubResponse:
        client_id = request.required("newClientOrderId")
        if client_id in placed:
            raise StubError(400, -2010, "Duplicate order sent.")
        placed[client_id] = {"clientOrderId": client_id, "transactTime": request.now_ms}
        return StubResponse(placed[client_id])

    stub.add_route("POST", "/api/v3/order", place_order, weight=1)
    form = {"symbol": "ETHBTC", "side": "BUY", "newClientOrderId": "deal-1-base"}

    first = requests.post(f"{stub.url}/v3/order", data=form, timeout=5)
    again = requests.post(f"{stub.url}/v3/order", data=form, timeout=5)

    assert first.status_code == 200
    assert first.json() == {"clientOrderId": "deal-1-base", "transactTime": stub.now_ms()}
    assert (again.status_code, again.json()["code"]) == (400, -2010)
    assert "X-MBX-USED-WEIGHT-1M" in again.headers
    assert requests.put(f"{stub.url}/v3/order", timeout=5).status_code == 405


def test_stub_starts_at_the_first_candle_by_default():
    with run_stub(ETH_FILE, speed=0) as stub:
        served = klines(stub, symbol="ETHBTC", interval="5m")

    assert served["open_time"].tolist() == [1515560100000]
    assert served["volume"].iloc[0] == 0.0
    assert np.isclose(served["close"].iloc[0], served["open"].iloc[0])
