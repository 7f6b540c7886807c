{#- The 7-1-7 timeliness of each outbreak alert (Frieden et al. 2021; WHO's 7-1-7 target):
    detected within 7 days of emergence, notified within 1 day of detection, early response
    started within 7 days of notification. Alerts that were discarded on verification are
    not outbreaks and are left out; an alert not yet notified or responded to has not met
    that target. Placed at the alert's org unit and the week it emerged. -#}
select
    alert_id,
    disease,
    rule,
    org_unit_id,
    emerged_on,
    detected_date,
    status,
    days_to_detect,
    days_to_notify,
    days_to_respond,
    coalesce(days_to_detect <= 7, false) as is_detected_within_7_days,
    coalesce(days_to_notify <= 1, false) as is_notified_within_1_day,
    coalesce(days_to_respond <= 7, false) as is_responded_within_7_days,
    coalesce(days_to_detect <= 7 and days_to_notify <= 1 and days_to_respond <= 7, false)
        as meets_7_1_7
from {{ ref('stg_healthpipe__alerts') }}
where status <> 'discarded'
