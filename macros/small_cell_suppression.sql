{#- Small-cell suppression for the public layer (models/marts/public).

    A count from 1 to threshold - 1 could identify a patient; it is masked (primary). Masking
    it alone is not enough: a reader who knows a total and all its parts but one subtracts.
    The totals a reader can take are listed, as groups of cells, in
    int_suppression_equations (parent and children org units, a period and the finer periods
    that roll into it, a data element over its disaggregations). hp_complete_masking then
    masks complementary cells until no group has exactly one masked cell:

        repeat
            for each group touched by the cells masked in the last round
                that has exactly one masked cell:
                mask its smallest unmasked non-zero cell (a zero only when no other
                is left; ties: the lower cell_id)
        until a round masks nothing

    Masking a cell in one direction can leave a lone masked cell in another (a week masked
    for its district leaves its month with one), hence the rounds; each only looks at the
    groups the previous round touched, so a round costs what changed, not the whole table.
    This is the usual greedy heuristic, not the least-loss solution (an integer programme):
    it may mask more than needed, never less. A zero complement is a poor one (the masked
    pair then adds up to the small count itself), so zeros are taken last. -#}
{% macro hp_small_cell_threshold() -%}
    {{ return(var('healthpipe_small_cell_threshold')) }}
{%- endmacro %}

{#- The public table a cell belongs to, as a number (int_suppression_cell_keys and
    int_suppression_link_keys carry it; the joins of masking compare integers). -#}
{% macro hp_suppression_table_key(column) -%}
    case {{ column }}
        when 'pub_surveillance_weekly' then 1
        when 'pub_indicator_values' then 2
        when 'pub_data_values' then 3
    end
{%- endmacro %}

{% macro hp_suppression_data_values_table_key() -%}3{%- endmacro %}

{#- The groups (equations) holding any of the cells that `seeds` (a query returning cell_id)
    selects, with all their members: one row per group and member, the group named by family,
    series_id, anchor_org_unit_key, anchor_period_key and anchor_period_type_key (for combo
    groups series_id is the combo_series_id; the keys are int_suppression_keys' numbers, 0
    where a family has no period type). A cell belongs to:

        org     its parent's group (as a part) and its own (as the total of its children);
        period  the group of each coarser period it rolls into (as a part, with the parts of
                its own type) and, as the total, the group of each finer type rolling into it;
        combo   its data element's group in its org unit and period (pub_data_values only).

    `cells` and `links` are int_suppression_cell_keys and int_suppression_link_keys. Listing
    only the groups of the seeds, not every group of every cell, is what keeps masking
    affordable at national scale: the rounds look at what the last round masked. -#}
{% macro hp_suppression_members(seeds, cells, links) %}
    with touched as (
        {{ hp_suppression_touched(seeds, cells, links) }}
    )
    {{ hp_suppression_members_of('touched', cells, links) }}
{% endmacro %}

{#- The keys of the groups holding the cells that `seeds` selects. -#}
{% macro hp_suppression_touched(seeds, cells, links) %}
    with seed as (

        select c.table_key, c.series_id, c.combo_series_id, c.org_unit_key, c.parent_key,
            c.period_key, c.period_type_key
        from {{ cells }} as c
        where c.cell_id in ({{ seeds }})

    )

    select distinct
            family, table_key, series_id, anchor_org_unit_key, anchor_period_key,
            anchor_period_type_key
        from (
            select 'org' as family, s.table_key, s.series_id,
                s.parent_key as anchor_org_unit_key, s.period_key as anchor_period_key,
                0 as anchor_period_type_key
            from seed as s
            where s.parent_key is not null
            union all
            select 'org', s.table_key, s.series_id, s.org_unit_key, s.period_key, 0
            from seed as s
            union all
            select 'period', s.table_key, s.series_id, s.org_unit_key, l.target_period_key,
                s.period_type_key
            from seed as s
            join {{ links }} as l on l.table_key = s.table_key and l.period_key = s.period_key
            union all
            select 'period', s.table_key, s.series_id, s.org_unit_key, s.period_key,
                l.period_type_key
            from seed as s
            join {{ links }} as l
                on l.table_key = s.table_key and l.target_period_key = s.period_key
            union all
            select 'combo', s.table_key, s.combo_series_id, s.org_unit_key, s.period_key, 0
            from seed as s
            where s.table_key = {{ hp_suppression_data_values_table_key() }}
        ) as keys
{% endmacro %}

{#- Every member of the groups whose keys `touched` (a relation or CTE name) lists, with its
    value (the candidate order of the masking rounds). -#}
{% macro hp_suppression_members_of(touched, cells, links) %}
    -- org: the children
    select t.family, t.series_id, t.anchor_org_unit_key, t.anchor_period_key,
        t.anchor_period_type_key, c.cell_id, c.cell_value
    from {{ touched }} as t
    join {{ cells }} as c
        on c.series_id = t.series_id
        and c.parent_key = t.anchor_org_unit_key
        and c.period_key = t.anchor_period_key
    where t.family = 'org'
    union all
    -- org and period: the total, where the table has it
    select t.family, t.series_id, t.anchor_org_unit_key, t.anchor_period_key,
        t.anchor_period_type_key, c.cell_id, c.cell_value
    from {{ touched }} as t
    join {{ cells }} as c
        on c.series_id = t.series_id
        and c.org_unit_key = t.anchor_org_unit_key
        and c.period_key = t.anchor_period_key
    where t.family in ('org', 'period')
    union all
    -- period: the periods of the group's type that roll into its period
    select t.family, t.series_id, t.anchor_org_unit_key, t.anchor_period_key,
        t.anchor_period_type_key, c.cell_id, c.cell_value
    from {{ touched }} as t
    join {{ links }} as l
        on l.table_key = t.table_key
        and l.target_period_key = t.anchor_period_key
        and l.period_type_key = t.anchor_period_type_key
    join {{ cells }} as c
        on c.series_id = t.series_id
        and c.org_unit_key = t.anchor_org_unit_key
        and c.period_key = l.period_key
    where t.family = 'period'
    union all
    -- combo: the data element's disaggregations
    select t.family, t.series_id, t.anchor_org_unit_key, t.anchor_period_key,
        t.anchor_period_type_key, c.cell_id, c.cell_value
    from {{ touched }} as t
    join {{ cells }} as c
        on c.combo_series_id = t.series_id
        and c.org_unit_key = t.anchor_org_unit_key
        and c.period_key = t.anchor_period_key
    where t.family = 'combo'
      and c.table_key = {{ hp_suppression_data_values_table_key() }}
{% endmacro %}

{#- The cells one masking round adds: in each group of `members` (hp_suppression_members_of's
    rows) that has exactly one cell in `masked`, the first unmasked member in candidate order
    (non-zero before zero, then the smaller value, then the lower cell_id). -#}
{% macro hp_masking_round_picks(members, masked) -%}
    {{ return(adapter.dispatch('hp_masking_round_picks', 'healthpipe')(members, masked)) }}
{%- endmacro %}

{% macro default__hp_masking_round_picks(members, masked) %}
    {%- set group_key = hp_suppression_group_key('g') %}
    select distinct ranked.cell_id
    from (
        select
            g.cell_id,
            m.cell_id is not null as is_masked,
            sum(case when m.cell_id is not null then 1 else 0 end)
                over (partition by {{ group_key }}) as masked_cells,
            row_number() over (
                partition by {{ group_key }}
                order by case when m.cell_id is not null then 1 else 0 end,
                    case when g.cell_value = 0 then 1 else 0 end,
                    g.cell_value, g.cell_id
            ) as candidate_rank
        from {{ members }} as g
        left join {{ masked }} as m on m.cell_id = g.cell_id
    ) as ranked
    where ranked.masked_cells = 1
      and not ranked.is_masked
      and ranked.candidate_rank = 1
{% endmacro %}

{#- DuckDB: one hash aggregate per group instead of two windows that sort every group's
    members (at M scale the first round's pick went from 4.7 s to 1.5 s, the same cells). -#}
{% macro duckdb__hp_masking_round_picks(members, masked) %}
    select distinct pick as cell_id
    from (
        select
            count(m.cell_id) as masked_cells,
            arg_min(g.cell_id, (g.cell_value = 0, g.cell_value, g.cell_id))
                filter (where m.cell_id is null) as pick
        from {{ members }} as g
        left join {{ masked }} as m on m.cell_id = g.cell_id
        group by {{ hp_suppression_group_key('g') }}
    ) as grouped
    where masked_cells = 1
      and pick is not null
{% endmacro %}

{% macro hp_suppression_group_key(alias) -%}
    {%- for column in ['family', 'series_id', 'anchor_org_unit_key', 'anchor_period_key', 'anchor_period_type_key'] -%}
        {{ alias }}.{{ column }}{{ ', ' if not loop.last }}
    {%- endfor -%}
{%- endmacro %}

{#- Runs from int_suppression_masked_cells' post-hook: the rounds are statements run one after
    the other, so the hook itself renders no SQL of its own. `masked` holds the masked cells
    (cell_id, masked_round), the small counts as round 0; `cells` and `links` are
    int_suppression_cell_keys and int_suppression_link_keys. Each round lists the groups of
    the cells the previous round masked, and in each such group with exactly one masked cell
    masks the first unmasked cell in candidate order (hp_masking_round_picks): it appends
    them to `masked` (insert only, no update: engines whose tables are files, such as Spark
    without Delta, can append but not update). A fixpoint not reached within max_rounds fails
    the build. -#}
{% macro hp_complete_masking(masked, cells, links, max_rounds=100) %}
    {%- if execute -%}
        {%- set state = namespace(last_added=1, rounds=0) -%}
        {%- for round in range(1, max_rounds + 1) -%}
            {%- if state.last_added > 0 -%}
                {%- set seeds = 'select cell_id from ' ~ masked ~ ' where masked_round = ' ~ (round - 1) -%}
                {#- The touched groups and their members go through temporary tables:
                    with their sizes known, the engine joins them into the (much larger)
                    cells instead of the other way round (planned as one query, DuckDB
                    guessed billions of members and hashed the whole table each round). -#}
                {%- call statement('hp_masking_touched') -%}
                    {{ hp_drop_temp_table('hp_masking_touched') }}
                {%- endcall -%}
                {%- call statement('hp_masking_touched') -%}
                    {{ hp_create_temp_table('hp_masking_touched', hp_suppression_touched(seeds, cells, links)) }}
                {%- endcall -%}
                {%- call statement('hp_masking_members') -%}
                    {{ hp_drop_temp_table('hp_masking_members') }}
                {%- endcall -%}
                {%- call statement('hp_masking_members') -%}
                    {{ hp_create_temp_table('hp_masking_members', hp_suppression_members_of('hp_masking_touched', cells, links)) }}
                {%- endcall -%}
                {%- call statement('hp_masking_round') -%}
                    insert into {{ masked }} (cell_id, masked_round)
                    select picks.cell_id, {{ round }}
                    from ({{ hp_masking_round_picks('hp_masking_members', masked) }}) as picks
                {%- endcall -%}
                {%- set added = run_query(
                    "select count(*) from " ~ masked ~ " where masked_round = " ~ round
                ).columns[0].values()[0] -%}
                {%- set state.last_added = added -%}
                {%- set state.rounds = round -%}
            {%- endif -%}
        {%- endfor -%}
        {%- call statement('hp_masking_cleanup') -%}
            {{ hp_drop_temp_table('hp_masking_touched') }}
        {%- endcall -%}
        {%- call statement('hp_masking_cleanup') -%}
            {{ hp_drop_temp_table('hp_masking_members') }}
        {%- endcall -%}
        {%- if state.last_added > 0 -%}
            {{ exceptions.raise_compiler_error(
                "small-cell suppression: complementary masking still changed cells after "
                ~ max_rounds ~ " rounds in " ~ masked) }}
        {%- endif -%}
        {{ log("small-cell suppression: complementary masking settled after " ~ state.rounds ~ " rounds", info=false) }}
    {%- endif -%}
{% endmacro %}

{#- Fresh statistics for a table a later statement joins heavily (PostgreSQL plans a table
    it has never analysed as tiny). -#}
{% macro hp_analyze(relation) -%}
    {{ return(adapter.dispatch('hp_analyze', 'healthpipe')(relation)) }}
{%- endmacro %}

{% macro default__hp_analyze(relation) -%}
    analyze {{ relation }}
{%- endmacro %}

{#- The mask of every cell of one public table, keyed as in int_suppression_cells. -#}
{% macro hp_public_masks(table_name) %}
    select
        c.measure,
        c.key_1,
        c.key_2,
        c.key_3,
        c.key_4,
        c.org_unit_id,
        c.period_id,
        m.is_masked
    from {{ ref('int_suppression_cells') }} as c
    join {{ ref('int_suppression_masks') }} as m on m.cell_id = c.cell_id
    where c.table_name = '{{ table_name }}'
{% endmacro %}
