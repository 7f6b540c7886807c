{#- The org-unit hierarchy (country -> region -> district -> facility, or deeper) with one
    id and name column per ancestor level, and one column per org-unit group set (facility
    type, ownership ...) holding the unit's group in that set. -#}
-- depends_on: {{ ref('int_org_unit_group_sets') }}
{%- set named_levels = 6 -%}
{%- set group_sets = [] -%}
{%- if execute -%}
    {%- set rows = run_query(
        "select distinct column_name from " ~ ref('int_org_unit_group_sets')
        ~ " where column_name is not null and column_name <> '' order by column_name") -%}
    {%- for row in rows.rows -%}
        {%- if row[0] not in ['org_unit_id', 'code', 'name', 'level', 'path', 'parent_id', 'source'] -%}
            {%- do group_sets.append(row[0]) -%}
        {%- endif -%}
    {%- endfor -%}
{%- endif %}

with org_units as (

    select * from {{ ref('int_org_units') }}

),

ancestors as (

    select a.org_unit_id, a.ancestor_level, a.ancestor_id, o.name as ancestor_name
    from {{ ref('int_org_unit_ancestors') }} as a
    left join org_units as o on o.org_unit_id = a.ancestor_id

),

ancestor_columns as (

    select
        org_unit_id
        {%- for level in range(1, named_levels + 1) %},
        max(case when ancestor_level = {{ level }} then ancestor_id end) as level_{{ level }}_id,
        max(case when ancestor_level = {{ level }} then ancestor_name end) as level_{{ level }}_name
        {%- endfor %}
    from ancestors
    group by org_unit_id

),

group_columns as (

    select
        org_unit_id
        {%- for column in group_sets %},
        max(case when column_name = '{{ column }}' then org_unit_group_name end) as {{ column }}
        {%- endfor %}
    from {{ ref('int_org_unit_group_assignments') }}
    group by org_unit_id

)

select
    ou.org_unit_id,
    ou.code,
    ou.name,
    ou.short_name,
    ou.level,
    ou.parent_id,
    ou.path,
    ou.geometry,
    ou.opened_at,
    ou.closed_at,
    ou.closed_at is not null as is_closed,
    {%- for level in range(1, named_levels + 1) %}
    a.level_{{ level }}_id,
    a.level_{{ level }}_name,
    {%- endfor %}
    {%- for column in group_sets %}
    g.{{ column }},
    {%- endfor %}
    ou.source_name as source
from org_units as ou
left join ancestor_columns as a on a.org_unit_id = ou.org_unit_id
left join group_columns as g on g.org_unit_id = ou.org_unit_id
