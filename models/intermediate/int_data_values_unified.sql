{#- Every data value the indicators read, with its period's type and dates: DHIS2 values as
    they come, and the reporting counts of int_reporting_facts as pseudo data elements
    "R:<data set>:<metric>" (read by R{dataSet.METRIC} operands), the values of derived
    data elements (int_derived_data_values) with their record source as `source`, and the
    data-quality counts of int_data_quality_facts as pseudo data elements "DQ_..." (seed
    data_quality_elements). The values derived from the alert records are not here but in
    int_alert_data_values, built after the alerts (pipelines/run.py). -#}
{%- set reporting_metrics = ['expected_reports', 'actual_reports', 'actual_reports_on_time'] -%}

with dhis2_values as (

    select
        v.data_element_id,
        v.category_option_combo_id,
        v.attribute_option_combo_id,
        v.org_unit_id,
        v.period_id,
        v.value_numeric as value,
        v.value_text,
        v.source_name as source,
        v.data_set_id,
        v.is_followup,
        false as is_derived,
        v.source_updated_at,
        v.landed_at
    from {{ ref('stg_dhis2__data_values') }} as v

),

reporting_counts as (
    {% for metric in reporting_metrics %}
    select
        'R:' || f.data_set_id || ':{{ metric | upper }}' as data_element_id,
        'HllvX50cXC0' as category_option_combo_id,
        'HllvX50cXC0' as attribute_option_combo_id,
        f.org_unit_id,
        f.period_id,
        cast(f.{{ metric }} as {{ hp_type_double() }}) as value,
        cast(f.{{ metric }} as {{ hp_type_text() }}) as value_text,
        'reporting' as source,
        f.data_set_id,
        false as is_followup,
        true as is_derived,
        cast(f.completed_at as timestamp) as source_updated_at,
        cast(null as timestamp) as landed_at
    from {{ ref('int_reporting_facts') }} as f
    {% if not loop.last %}union all{% endif %}
    {% endfor %}
),

derived_values as (

    {{ hp_derived_as_data_values(ref('int_derived_data_values')) }}

),

data_quality_counts as (

    select
        q.data_element_id,
        q.category_option_combo_id,
        q.attribute_option_combo_id,
        q.org_unit_id,
        q.period_id,
        q.value,
        cast(q.value as {{ hp_type_text() }}) as value_text,
        'data_quality' as source,
        cast(null as {{ hp_type_text() }}) as data_set_id,
        false as is_followup,
        true as is_derived,
        cast(null as timestamp) as source_updated_at,
        cast(null as timestamp) as landed_at
    from {{ ref('int_data_quality_facts') }} as q

),

all_values as (

    select * from dhis2_values
    union all
    select * from reporting_counts
    union all
    select * from derived_values
    union all
    select * from data_quality_counts

)

{{ hp_with_period_dates('all_values') }}
