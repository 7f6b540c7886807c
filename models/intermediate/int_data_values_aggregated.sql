{#- Every data value except those derived from the alert records (int_alert_data_values_aggregated
    aggregates them after the alerts), aggregated to every org-unit level and every period type
    at or above their own, the way DHIS2 analytics aggregates them (macros/data_values.sql). -#}
{{ config(materialized='table') }}

{{ hp_aggregated_data_values_sql(ref('int_data_values_unified')) }}
