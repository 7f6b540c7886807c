{#- Small-cell suppression for the public layer (models/marts/public).

    hp_masked_cells returns, for every non-null cell of `cells` (a relation or CTE with
    org_unit_id, the partition columns and value_column), whether it is masked:

    primary        the value is a count from 1 to threshold - 1 (zero stays visible) and the
                   `sensitive` expression holds for the row;
    complementary  subtraction must not reveal a primary cell. Cells are grouped by parent org
                   unit within each partition (for example disease and week). Walking the
                   hierarchy from the top, in each group:
                   - the parent is published and exactly one child is masked: the parent minus
                     the published children would give it away, so the smallest other child
                     is masked too;
                   - the parent is masked but no child is: the published children would add up
                     to the parent, so the smallest child is masked.
                   A parent absent from `cells` counts as published when
                   assume_parents_published (another public table publishes the total), else
                   as absent (no equation to protect).
    The walk goes level by level (1 .. healthpipe_max_org_unit_level) because a child's rule
    depends on its parent's final state. It protects sums along the org-unit hierarchy within
    one partition; sums across periods (weeks into years) or disaggregations are not covered. -#}
{% macro hp_small_cell_threshold() -%}
    {{ return(var('healthpipe_small_cell_threshold')) }}
{%- endmacro %}

{% macro hp_masked_cells(cells, partition_columns, value_column, org_units, sensitive='true',
                         assume_parents_published=false) %}
    {%- set threshold = hp_small_cell_threshold() -%}
    {%- set max_level = var('healthpipe_max_org_unit_level') | int -%}
    {%- set prefix = value_column ~ '_masking' -%}
    with {{ prefix }}_cells as (

        select
            c.org_unit_id,
            ou.parent_id,
            ou.level as org_unit_level,
            {%- for column in partition_columns %}
            c.{{ column }},
            {%- endfor %}
            c.{{ value_column }} as cell_value,
            ({{ sensitive }})
                and c.{{ value_column }} > 0
                and c.{{ value_column }} < {{ threshold }} as is_primary
        from {{ cells }} as c
        join {{ org_units }} as ou on ou.org_unit_id = c.org_unit_id
        where c.{{ value_column }} is not null

    ),

    {%- for level in range(1, max_level + 1) %}

    {{ prefix }}_level_{{ level }} as (

        select
            org_unit_id,
            {%- for column in partition_columns %}
            {{ column }},
            {%- endfor %}
            is_primary,
            is_primary or (
                candidate_rank = 1
                and not is_primary
                and ((parent_state = 'published' and masked_siblings = 1)
                     or (parent_state = 'masked' and masked_siblings = 0))
            ) as is_masked
        from (
            select
                c.*,
                {%- if level == 1 %}
                {{ "case when c.parent_id is not null then 'published' else 'absent' end" if assume_parents_published else "'absent'" }} as parent_state,
                {%- else %}
                case
                    when p.org_unit_id is not null and p.is_masked then 'masked'
                    when p.org_unit_id is not null then 'published'
                    {%- if assume_parents_published %}
                    when c.parent_id is not null then 'published'
                    {%- endif %}
                    else 'absent'
                end as parent_state,
                {%- endif %}
                sum(case when c.is_primary then 1 else 0 end) over (
                    partition by c.parent_id {%- for column in partition_columns %}, c.{{ column }}{% endfor %}
                ) as masked_siblings,
                row_number() over (
                    partition by c.parent_id {%- for column in partition_columns %}, c.{{ column }}{% endfor %}, c.is_primary
                    order by c.cell_value, c.org_unit_id
                ) as candidate_rank
            from {{ prefix }}_cells as c
            {%- if level > 1 %}
            left join {{ prefix }}_level_{{ level - 1 }} as p
                on p.org_unit_id = c.parent_id
                {%- for column in partition_columns %}
                and p.{{ column }} = c.{{ column }}
                {%- endfor %}
            {%- endif %}
            where c.org_unit_level = {{ level }}
        ) as ranked

    ){{ ',' if not loop.last }}
    {%- endfor %}

    {%- for level in range(1, max_level + 1) %}
    select * from {{ prefix }}_level_{{ level }}
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}
{% endmacro %}
