{#- The derived data values over the alert records (int_alert_data_values) aggregated as
    int_data_values_aggregated aggregates every other value; the indicators read both. -#}
{{ config(materialized='table') }}

{{ hp_aggregated_data_values_sql(ref('int_alert_data_values')) }}
