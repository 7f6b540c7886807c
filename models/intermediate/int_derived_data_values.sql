{{ config(materialized=('table' if target.type == 'spark' else 'view')) }}  {#- LAB: Spark's Hive metastore keeps view text in a 32,700-character column -#}
{#- Values of the derived data elements (indicators/*.yml `derived_data_elements:`): counts
    and sums over record-level facts per org unit and period, like DHIS2 program indicators.
    The facts are declared below so dbt builds them first, whichever ones are used. Those
    over the alert records are int_alert_data_values. -#}
-- depends_on: {{ ref('fct_lab_results') }}
-- depends_on: {{ ref('fct_stock') }}
-- depends_on: {{ ref('fct_workforce') }}
-- depends_on: {{ ref('fct_facility_assessments') }}
-- depends_on: {{ ref('fct_governance') }}
-- depends_on: {{ ref('fct_cross_sectoral') }}
-- depends_on: {{ ref('fct_community_reports') }}
-- depends_on: {{ ref('fct_nutrition_screenings') }}
-- depends_on: {{ ref('fct_encounters') }}
{{ hp_derived_data_values_sql(
    ref('stg_healthpipe__derived_data_elements'),
    ref('int_periods'),
    hp_record_sources() | reject('in', hp_alert_record_sources()) | list) }}
