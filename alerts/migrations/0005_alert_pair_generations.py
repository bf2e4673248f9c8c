"""Each (symbol, base timeframe) pair's alerts have a generation, which
PostgreSQL moves whenever one of them changes in a way evaluation reads.

An evaluation reads the generation first and reads the pair's alerts only
when it is not the one at which its process last read them: in
`manage.py bench`, reading a hundred thousand alert rows a cycle (about
130 MB of table) was a sixth of the cycle's CPU, for alerts that had not
changed.

- Inserting or deleting an alert moves its pair's generation; so does an
  update of any column evaluation reads (symbol, base timeframe, status, fire
  mode, expiry, conditions), by the API, the admin, an operator's SQL or a
  migration.
- Except what evaluation itself writes as an alert fires or expires: its
  last fired bar, and its status leaving `active` for `triggered` or
  `expired`. A worker's copy can then be older than the row, which is safe:
  triggers are written only for alerts still active, and one per alert and
  bar (alerts.evaluation says more). Otherwise every `once` alert firing
  would make every worker read its pair's alerts again.
- Generations come from one sequence: a value is never given twice, even
  after a TRUNCATE, which removes every generation.

On SQLite (the embedded default) the alerts are read at every evaluation.
"""

from django.db import migrations

from tradeeon.migration_sql import on_postgresql

FORWARD = """
CREATE SEQUENCE alert_pair_generation;
CREATE TABLE alert_pair_generations (
    symbol varchar(20) NOT NULL,
    timeframe varchar(3) NOT NULL,
    generation bigint NOT NULL DEFAULT nextval('alert_pair_generation'),
    PRIMARY KEY (symbol, timeframe)
);

CREATE FUNCTION alert_pair_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        INSERT INTO alert_pair_generations (symbol, timeframe)
        VALUES (OLD.symbol, OLD.base_timeframe)
        ON CONFLICT (symbol, timeframe)
        DO UPDATE SET generation = nextval('alert_pair_generation');
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND (NEW.symbol, NEW.base_timeframe)
                            IS DISTINCT FROM (OLD.symbol, OLD.base_timeframe)) THEN
        INSERT INTO alert_pair_generations (symbol, timeframe)
        VALUES (NEW.symbol, NEW.base_timeframe)
        ON CONFLICT (symbol, timeframe)
        DO UPDATE SET generation = nextval('alert_pair_generation');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER alert_pair_moved_by_insert AFTER INSERT ON alerts_alert
FOR EACH ROW EXECUTE FUNCTION alert_pair_moved();
CREATE TRIGGER alert_pair_moved_by_delete AFTER DELETE ON alerts_alert
FOR EACH ROW EXECUTE FUNCTION alert_pair_moved();
CREATE TRIGGER alert_pair_moved_by_update AFTER UPDATE ON alerts_alert
FOR EACH ROW WHEN (
    (OLD.symbol, OLD.base_timeframe, OLD.fire_mode, OLD.expires_at, OLD.condition_config)
    IS DISTINCT FROM
    (NEW.symbol, NEW.base_timeframe, NEW.fire_mode, NEW.expires_at, NEW.condition_config)
    OR (OLD.status IS DISTINCT FROM NEW.status
        AND NOT (OLD.status = 'active' AND NEW.status IN ('triggered', 'expired'))))
EXECUTE FUNCTION alert_pair_moved();

CREATE FUNCTION alert_pairs_cleared() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM alert_pair_generations;
    RETURN NULL;
END $$;
CREATE TRIGGER alert_pairs_cleared AFTER TRUNCATE ON alerts_alert
FOR EACH STATEMENT EXECUTE FUNCTION alert_pairs_cleared();

INSERT INTO alert_pair_generations (symbol, timeframe)
SELECT DISTINCT symbol, base_timeframe FROM alerts_alert
ON CONFLICT DO NOTHING;
"""

BACKWARD = """
DROP TRIGGER alert_pairs_cleared ON alerts_alert;
DROP FUNCTION alert_pairs_cleared();
DROP TRIGGER alert_pair_moved_by_update ON alerts_alert;
DROP TRIGGER alert_pair_moved_by_delete ON alerts_alert;
DROP TRIGGER alert_pair_moved_by_insert ON alerts_alert;
DROP FUNCTION alert_pair_moved();
DROP TABLE alert_pair_generations;
DROP SEQUENCE alert_pair_generation;
"""


class Migration(migrations.Migration):
    dependencies = [("alerts", "0004_per_bar_write_costs")]

    operations = [migrations.RunPython(on_postgresql(FORWARD), on_postgresql(BACKWARD))]
