-- Demo source database: a small shop and a Korean market-data feed.
CREATE SCHEMA shop;
CREATE SCHEMA market;

CREATE TYPE shop.order_status AS ENUM ('new', 'paid', 'shipped', 'cancelled');

CREATE TABLE shop.customers (
    id          bigint PRIMARY KEY,
    email       text NOT NULL,
    "Full Name" text,
    country     char(2),
    created_at  timestamptz NOT NULL,
    tags        text[]
);
INSERT INTO shop.customers
SELECT i, 'customer' || i || '@example.com',
       (ARRAY['김민준', 'Anna Müller', 'O''Brien', 'Lee "Lucky" Chen'])[1 + i % 4] || ' ' || i,
       (ARRAY['KR', 'DE', 'IE', 'US'])[1 + i % 4],
       timestamptz '2026-01-01 00:00:00+00' + i * interval '37 minutes',
       CASE WHEN i % 5 = 0 THEN NULL ELSE ARRAY['vip', 'tab	and
newline'] END
FROM generate_series(1, 2000) AS i;

CREATE TABLE shop.orders (
    order_id    bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES shop.customers (id),
    status      shop.order_status NOT NULL,
    total       numeric(12, 2) NOT NULL,
    details     jsonb,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX ON shop.orders (updated_at);
INSERT INTO shop.orders
SELECT i, 1 + i % 2000, (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + i % 4]::shop.order_status,
       round((i % 997) * 1.37, 2),
       jsonb_build_object('items', 1 + i % 7, 'coupon', CASE WHEN i % 11 = 0 THEN '신규가입' END),
       -- spread from the hourly table's first partition to the last complete hour, so every
       -- partition the UI shows has rows (the demo loads them all as one range)
       timestamptz '2026-11-01 00:00:00+00'
         + (i - 1) * ((date_trunc('hour', now()) - timestamptz '2026-11-01 00:00:00+00') / 20000)
FROM generate_series(1, 20000) AS i;

CREATE TABLE market."raw_data_인포맥스종목마스터" (
    "종목코드"   text PRIMARY KEY,
    "종목명"     text NOT NULL,
    "시장구분"   text NOT NULL,
    "상장주식수" bigint,
    "액면가"     numeric,
    "갱신시각"   timestamp
);
INSERT INTO market."raw_data_인포맥스종목마스터"
SELECT lpad(i::text, 6, '0'), (ARRAY['삼성전자', '현대차', '카카오', 'NAVER'])[1 + i % 4] || ' ' || i,
       (ARRAY['KOSPI', 'KOSDAQ'])[1 + i % 2], i * 1000, (ARRAY[100, 500, 5000.0])[1 + i % 3],
       timestamp '2026-11-21 09:00' + i * interval '1 second'
FROM generate_series(1, 3000) AS i;
