{{ config(materialized=('table' if target.type == 'spark' else 'view')) }}  {#- as int_derived_data_values -#}
{#- The derived data values over the alert records (the 7-1-7 timeliness of outbreak
    detection, notification and response), as data values. Kept apart from
    int_data_values_unified: alerting writes the alert records after the models it reads are
    built, so a run builds these, and only what reads them, after the alerts
    (pipelines/run.py). -#}
-- depends_on: {{ ref('fct_alert_timeliness') }}
with derived as (

    {{ hp_derived_data_values_sql(
        ref('stg_healthpipe__derived_data_elements'),
        ref('int_periods'),
        hp_alert_record_sources()) }}

),

alert_values as (

    {{ hp_derived_as_data_values('derived') }}

)

{{ hp_with_period_dates('alert_values') }}
