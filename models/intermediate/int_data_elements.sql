{#- One row per data element UID (the most recently updated version when several DHIS2
    sources publish it), plus the reporting counts of each data set as pseudo data elements
    "R:<data set>:<metric>" (summed like any count), the derived data elements defined in
    the indicator YAML files (source_name: the record source they count), and the
    data-quality counts of seed data_quality_elements ("DQ_...", summed likewise). -#}
{%- set reporting_metrics = [('EXPECTED_REPORTS', 'expected reports'), ('ACTUAL_REPORTS', 'actual reports'),
                             ('ACTUAL_REPORTS_ON_TIME', 'reports on time')] -%}

with ranked as (

    select
        *,
        row_number() over (
            partition by data_element_id
            order by source_updated_at desc nulls last, landed_at desc, source_name
        ) as recency
    from {{ ref('stg_dhis2__data_elements') }}

),

data_elements as (

    select
        data_element_id,
        code,
        name,
        short_name,
        value_type,
        aggregation_type,
        domain_type,
        category_combo_id,
        false as is_derived,
        source_name
    from ranked
    where recency = 1

),

reporting as (
    {% for metric, label in reporting_metrics %}
    select
        'R:' || data_set_id || ':{{ metric }}' as data_element_id,
        code || '_{{ metric }}' as code,
        name || ': {{ label }}' as name,
        name || ': {{ label }}' as short_name,
        'INTEGER_ZERO_OR_POSITIVE' as value_type,
        'SUM' as aggregation_type,
        'AGGREGATE' as domain_type,
        'bjDvmb4bfuf' as category_combo_id,
        true as is_derived,
        source_name
    from {{ ref('int_data_sets') }}
    {% if not loop.last %}union all{% endif %}
    {% endfor %}
),

derived as (

    select
        data_element_id,
        data_element_id as code,
        name,
        name as short_name,
        'NUMBER' as value_type,
        aggregation_type,
        'AGGREGATE' as domain_type,
        'bjDvmb4bfuf' as category_combo_id,
        true as is_derived,
        source_model as source_name
    from {{ ref('stg_healthpipe__derived_data_elements') }}

),

data_quality as (

    select
        data_element_id,
        data_element_id as code,
        name,
        name as short_name,
        'INTEGER_ZERO_OR_POSITIVE' as value_type,
        'SUM' as aggregation_type,
        'AGGREGATE' as domain_type,
        'bjDvmb4bfuf' as category_combo_id,
        true as is_derived,
        'data_quality' as source_name
    from {{ ref('data_quality_elements') }}

)

select * from data_elements
union all
select * from reporting
union all
select * from derived
union all
select * from data_quality
