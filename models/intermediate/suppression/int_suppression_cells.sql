{#- Every cell the public layer (models/marts/public) may publish, one row per count, with its
    place in the three directions a total can be taken over: the org-unit hierarchy, coarser
    periods and disaggregations. is_primary marks a count from 1 to the small-cell threshold
    minus 1 in a sensitive table; int_suppression_masks adds the complementary cells.

    key_1 .. key_4 identify the series within a public table (for pub_data_values: source,
    data element, category option combo, attribute option combo); measure names the column
    (cases and deaths are masked separately). cell_id numbers the cells in key order, so the
    choice between equal candidates is the same on every build. series_id numbers the series
    (table, measure and the four keys) and combo_series_id a data element's series over its
    disaggregations (table, measure, source and data element): the groups of
    hp_suppression_members join on them (in int_suppression_cell_keys, where the org unit,
    parent and period are numbers too). -#}
{{ config(
    materialized='table',
    indexes=hp_indexes([{'columns': ['cell_id'], 'unique': true}])
) }}

{%- set threshold = hp_small_cell_threshold() %}
{%- set series_keys = ['table_name', 'measure', 'key_1', 'key_2', 'key_3', 'key_4'] %}

with people_indicators as (

    -- indicators that count people; those reading only reporting or data-quality counts
    -- describe reports and are never masked
    select distinct o.indicator_id
    from {{ ref('stg_healthpipe__indicator_operands') }} as o
    left join {{ ref('data_quality_elements') }} as q on q.data_element_id = o.data_element_id
    where o.data_element_id not like 'R:%' and q.data_element_id is null

),

surveillance as (

    select
        'pub_surveillance_weekly' as table_name,
        m.measure,
        s.disease as key_1,
        '' as key_2,
        '' as key_3,
        '' as key_4,
        s.org_unit_id,
        s.period_id,
        'Weekly' as period_type,
        cast(case m.measure when 'cases' then s.cases else s.deaths end as {{ hp_type_double() }}) as cell_value,
        true as is_sensitive
    from {{ ref('fct_surveillance_weekly') }} as s
    cross join (select 'cases' as measure union all select 'deaths') as m

),

indicators as (

    select
        'pub_indicator_values' as table_name,
        m.measure,
        iv.indicator_id as key_1,
        '' as key_2,
        '' as key_3,
        '' as key_4,
        iv.org_unit_id,
        iv.period_id,
        iv.period_type,
        case m.measure when 'numerator' then iv.numerator else iv.denominator end as cell_value,
        pi.indicator_id is not null as is_sensitive
    from {{ ref('indicator_values') }} as iv
    left join people_indicators as pi on pi.indicator_id = iv.indicator_id
    cross join (select 'numerator' as measure union all select 'denominator') as m

),

data_values as (

    select
        'pub_data_values' as table_name,
        'value' as measure,
        v.source as key_1,
        v.data_element_id as key_2,
        coalesce(v.category_option_combo_id, '') as key_3,
        coalesce(v.attribute_option_combo_id, '') as key_4,
        v.org_unit_id,
        v.period_id,
        v.period_type,
        v.value as cell_value,
        -- reporting and data-quality counts describe reports, not people
        v.source not in ('reporting', 'data_quality') as is_sensitive
    from {{ ref('fct_data_values') }} as v

),

cells as (

    select * from surveillance
    union all
    select * from indicators
    union all
    select * from data_values

),

placed as (

    select c.*, ou.parent_id
    from cells as c
    join {{ ref('dim_org_unit') }} as ou on ou.org_unit_id = c.org_unit_id
    where c.cell_value is not null

),

{#- cell_id numbers every cell in bytewise key order. One window over all cells (tens of millions
    at national scale) has no partition, so the engine must hold it whole: DuckDB ran out of
    memory there. Instead the few thousand series are numbered here, each with the count of the
    cells before it (its offset), and every cell is numbered within its series by a partitioned
    window, which spills and runs in parallel. The numbers are the same as one global window's. -#}
series as (

    select
        {%- for column in series_keys %}
        {{ column }},
        {%- endfor %}
        count(*) as cell_count
    from placed
    group by {% for column in series_keys %}{{ column }}{{ ', ' if not loop.last }}{% endfor %}

),

numbered_series as (

    select
        {%- for column in series_keys %}
        {{ column }},
        {%- endfor %}
        dense_rank() over (
            order by {% for column in series_keys %}{{ column }}{{ ', ' if not loop.last }}{% endfor %}
        ) as series_id,
        dense_rank() over (order by table_name, measure, key_1, key_2) as combo_series_id,
        -- sum() widens (DuckDB's hugeint, PostgreSQL's numeric): cell_id stays a bigint
        cast(coalesce(sum(cell_count) over (
            order by
            {%- for column in series_keys %}
                {{ hp_bytewise(column) }}{{ ',' if not loop.last }}
            {%- endfor %}
            rows between unbounded preceding and 1 preceding
        ), 0) as bigint) as cell_offset
    from series

)

-- the keys are never NULL (not_null tests on the facts' columns; key_3 and key_4 are
-- coalesced above), so a plain equality join finds every cell's series
select
    s.cell_offset + row_number() over (
        partition by {% for column in series_keys %}c.{{ column }}{{ ', ' if not loop.last }}{% endfor %}
        order by {{ hp_bytewise('c.org_unit_id') }}, {{ hp_bytewise('c.period_id') }}
    ) as cell_id,
    s.series_id,
    s.combo_series_id,
    c.table_name,
    c.measure,
    c.key_1,
    c.key_2,
    c.key_3,
    c.key_4,
    c.org_unit_id,
    c.parent_id,
    c.period_id,
    c.period_type,
    c.cell_value,
    c.is_sensitive and c.cell_value > 0 and c.cell_value < {{ threshold }} as is_primary
from placed as c
join numbered_series as s
    on
    {%- for column in series_keys %}
        {{ 'and ' if not loop.first }}s.{{ column }} = c.{{ column }}
    {%- endfor %}
