{#- Alert records (pipelines/alerts), one row per alert event. -#}
select
    alert_id,
    disease,
    rule,
    severity,
    org_unit_id,
    org_unit_level,
    period_id,
    last_period_id,
    status,
    emerged_on,
    cast(detected_at as date) as detected_date,
    detected_at,
    notified_at,
    responded_at,
    days_to_detect,
    days_to_notify,
    days_to_respond
from {{ source('alerting', 'alerts') }}
