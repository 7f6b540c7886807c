{#- The shapes data values take on their way to the indicators (int_data_values_unified and
    int_alert_data_values share them; int_data_values_aggregated and
    int_alert_data_values_aggregated aggregate them the same way). -#}

{#- Derived data values (hp_derived_data_values_sql's rows) as data values. -#}
{% macro hp_derived_as_data_values(derived_relation) %}
    select
        d.data_element_id,
        -- a disaggregated derived element's combo is the value it was split by
        coalesce(d.category_option_combo_id, 'HllvX50cXC0') as category_option_combo_id,
        'HllvX50cXC0' as attribute_option_combo_id,
        d.org_unit_id,
        d.period_id,
        -- sums and means of doubles come out of parallel aggregation in no fixed order:
        -- 9 decimals keep them the same from run to run (and on both engines)
        cast(cast(d.value as decimal(38, 9)) as {{ hp_type_double() }}) as value,
        {{ hp_decimal_text('cast(d.value as decimal(38, 9))') }} as value_text,
        d.source,
        cast(null as {{ hp_type_text() }}) as data_set_id,
        false as is_followup,
        true as is_derived,
        cast(null as timestamp) as source_updated_at,
        cast(null as timestamp) as landed_at
    from {{ derived_relation }} as d
{% endmacro %}

{#- Data values (without period dates) with their period's type and dates. -#}
{% macro hp_with_period_dates(values_relation) %}
    select
        v.data_element_id,
        v.category_option_combo_id,
        v.attribute_option_combo_id,
        v.org_unit_id,
        v.period_id,
        p.period_type,
        p.start_date as period_start_date,
        p.end_date as period_end_date,
        v.value,
        v.value_text,
        v.source,
        v.data_set_id,
        v.is_followup,
        v.is_derived,
        v.source_updated_at,
        v.landed_at
    from {{ values_relation }} as v
    join {{ ref('int_periods') }} as p on p.period_id = v.period_id
{% endmacro %}

{#- The data values of `values_relation` (columns as int_data_values_unified) aggregated to
    every org-unit level and every period type at or above their own, per data element, category option combo and attribute option combo, the way DHIS2
    analytics aggregates them: first over time within each reporting org unit, then over the
    org units below each ancestor, each step by the data element's aggregation type.

    SUM                    sum over time, sum over org units
    AVERAGE                mean of all values (time and org units)
    AVERAGE_SUM_ORG_UNIT   mean over time, sum over org units (population, stock levels)
    LAST (LAST_IN_PERIOD)  latest value in time, sum over org units
    LAST_AVERAGE_ORG_UNIT  latest value in time, mean over org units
    MIN / MAX / COUNT      over all values

    The sums run on decimal(38, 9), exactly: summing doubles in parallel threads adds them in
    no fixed order, so the last bits of a total (and a ratio built on it) changed from one
    build of the same data to the next. The published value is a double again. -#}
{% macro hp_aggregated_data_values_sql(values_relation) %}
    with data_values as (

        select
            f.data_element_id,
            f.category_option_combo_id,
            f.attribute_option_combo_id,
            f.org_unit_id,
            f.period_id,
            f.period_start_date,
            cast(f.value as decimal(38, 9)) as value,
            coalesce(de.aggregation_type, 'SUM') as aggregation_type
        from {{ values_relation }} as f
        left join {{ ref('int_data_elements') }} as de on de.data_element_id = f.data_element_id
        where f.value is not null

    ),

    series as (

        -- the data element x combo series (thousands), the org units and the target periods are
        -- numbered in small tables, so that the two large aggregations below group on three
        -- integers rather than seven text columns (at 10 million values they spilled for minutes)
        select
            data_element_id,
            category_option_combo_id,
            attribute_option_combo_id,
            aggregation_type,
            row_number() over (
                order by data_element_id, category_option_combo_id, attribute_option_combo_id
            ) as series_key
        from (
            select distinct
                data_element_id, category_option_combo_id, attribute_option_combo_id, aggregation_type
            from data_values
        ) as distinct_series

    ),

    units as (

        select org_unit_id, row_number() over (order by org_unit_id) as unit_key
        from (
            select org_unit_id from {{ ref('int_org_unit_ancestors') }}
            union
            select ancestor_id from {{ ref('int_org_unit_ancestors') }}
        ) as every_unit

    ),

    ancestors as (

        select u.unit_key, ancestor.unit_key as ancestor_key, a.ancestor_level
        from {{ ref('int_org_unit_ancestors') }} as a
        join units as u on u.org_unit_id = a.org_unit_id
        join units as ancestor on ancestor.org_unit_id = a.ancestor_id

    ),

    target_periods as (

        select
            target_period_id,
            target_period_type,
            row_number() over (order by target_period_id, target_period_type) as target_key
        from (
            select distinct target_period_id, target_period_type from {{ ref('int_period_rollups') }}
        ) as distinct_targets

    ),

    rollups as (

        select r.period_id, t.target_key
        from {{ ref('int_period_rollups') }} as r
        join target_periods as t
            on t.target_period_id = r.target_period_id and t.target_period_type = r.target_period_type

    ),

    over_time as (

        select
            s.series_key,
            u.unit_key,
            r.target_key,
            sum(v.value) as sum_value,
            count(*) as value_count,
            min(v.value) as min_value,
            max(v.value) as max_value,
            -- the value of the latest period: an aggregate, not a window over every value and
            -- target period (at 10 million values that window sorted and spilled for minutes)
            {{ hp_value_of_latest('v.value', 'v.period_start_date') }} as last_value
        from data_values as v
        join series as s
            on s.data_element_id = v.data_element_id
            and s.category_option_combo_id = v.category_option_combo_id
            and s.attribute_option_combo_id = v.attribute_option_combo_id
            and s.aggregation_type = v.aggregation_type
        join units as u on u.org_unit_id = v.org_unit_id
        join rollups as r on r.period_id = v.period_id
        group by 1, 2, 3

    ),

    over_org_units as (

        select
            t.series_key,
            a.ancestor_key,
            a.ancestor_level,
            t.target_key,
            sum(t.sum_value) as sum_value,
            sum(t.value_count) as value_count,
            min(t.min_value) as min_value,
            max(t.max_value) as max_value,
            sum(cast(t.sum_value / t.value_count as decimal(38, 9))) as sum_of_means,
            sum(t.last_value) as sum_of_last,
            sum(t.last_value) / count(t.last_value) as mean_of_last
        from over_time as t
        join ancestors as a on a.unit_key = t.unit_key
        group by 1, 2, 3, 4

    )

    select
        s.data_element_id,
        s.category_option_combo_id,
        s.attribute_option_combo_id,
        u.org_unit_id,
        o.ancestor_level as org_unit_level,
        p.target_period_id as period_id,
        p.target_period_type as period_type,
        s.aggregation_type,
        o.value_count,
        cast(case s.aggregation_type
            when 'AVERAGE' then o.sum_value / o.value_count
            when 'AVERAGE_SUM_ORG_UNIT' then o.sum_of_means
            when 'LAST' then o.sum_of_last
            when 'LAST_IN_PERIOD' then o.sum_of_last
            when 'LAST_AVERAGE_ORG_UNIT' then o.mean_of_last
            when 'MIN' then o.min_value
            when 'MAX' then o.max_value
            when 'COUNT' then o.value_count
            else o.sum_value
        end as {{ hp_type_double() }}) as value
    from over_org_units as o
    join series as s on s.series_key = o.series_key
    join units as u on u.unit_key = o.ancestor_key
    join target_periods as p on p.target_key = o.target_key
{% endmacro %}
