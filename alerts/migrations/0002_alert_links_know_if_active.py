"""Each link between an alert and a registry condition says whether the alert
is active, kept so by PostgreSQL itself whatever changes the alert.

A condition trigger counts its subscribers as it is written: with the alert's
status only on the alert, that meant fetching every alert of the condition
(about 0.1 ms per trigger, 1.4 s of a 100,000-alert cycle's 13,600 triggers);
from the links' own flag, through a partial index, it is twenty times less.

- A link takes its alert's status when it is inserted, with the alert's row
  locked in share mode, so that a status change committing meanwhile either
  waits for the link or is seen by it.
- A change of an alert's status sets its links' flag, in the same
  transaction.

On SQLite (the embedded default) the count joins the alerts, as before.
"""

from django.db import migrations

from tradeeon.migration_sql import on_postgresql

FORWARD = """
ALTER TABLE alerts_alert_conditions ADD COLUMN active boolean NOT NULL DEFAULT false;

CREATE FUNCTION alert_link_takes_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT a.status = 'active' INTO NEW.active
    FROM alerts_alert a WHERE a.id = NEW.alert_id FOR SHARE;
    -- An alert not there yet (foreign keys are checked at commit) is not active.
    NEW.active := coalesce(NEW.active, false);
    RETURN NEW;
END $$;
CREATE TRIGGER alert_link_takes_status BEFORE INSERT ON alerts_alert_conditions
FOR EACH ROW EXECUTE FUNCTION alert_link_takes_status();

CREATE FUNCTION alert_status_to_links() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE alerts_alert_conditions SET active = (NEW.status = 'active')
    WHERE alert_id = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER alert_status_to_links AFTER UPDATE OF status ON alerts_alert
FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION alert_status_to_links();

-- After the triggers: a status changed meanwhile is either seen here or
-- copied by its trigger.
UPDATE alerts_alert_conditions c SET active = (a.status = 'active')
FROM alerts_alert a WHERE a.id = c.alert_id;
CREATE INDEX alert_condition_active ON alerts_alert_conditions (condition_id) WHERE active;
"""

BACKWARD = """
DROP TRIGGER alert_status_to_links ON alerts_alert;
DROP FUNCTION alert_status_to_links();
DROP TRIGGER alert_link_takes_status ON alerts_alert_conditions;
DROP FUNCTION alert_link_takes_status();
DROP INDEX alert_condition_active;
ALTER TABLE alerts_alert_conditions DROP COLUMN active;
"""


class Migration(migrations.Migration):
    dependencies = [("alerts", "0001_initial")]

    operations = [migrations.RunPython(on_postgresql(FORWARD), on_postgresql(BACKWARD))]
