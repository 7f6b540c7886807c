{#- Builds the indicator_values query from the compiled definitions in
    stg_healthpipe__indicators / stg_healthpipe__indicator_operands: per indicator, its operands
    (already aggregated to each org unit and period) become columns o1, o2 ..., then the
    numerator and denominator expressions (compiled from DHIS2 syntax by pipelines/indicators.py)
    are evaluated over them. Ratios are computed from the aggregated operands, never by
    averaging lower-level ratios. Operands are summed as decimals, exactly, so that the same
    data gives the same bits on every build (see int_data_values_aggregated). -#}
{% macro hp_indicator_values_sql(aggregated_relation, indicators_relation, operands_relation) %}
    {%- set indicators = [] -%}
    {%- set operands = {} -%}
    {%- if execute -%}
        {%- set indicator_rows = run_query(
            "select indicator_id, numerator_sql, denominator_sql from " ~ indicators_relation
            ~ " where is_computable order by indicator_id") -%}
        {%- for row in indicator_rows.rows -%}
            {%- do indicators.append({'id': row[0], 'numerator': row[1] | replace('double precision', hp_type_double()), 'denominator': row[2] | replace('double precision', hp_type_double())}) -%}
        {%- endfor -%}
        {%- set operand_rows = run_query(
            "select indicator_id, operand_alias, data_element_id, category_option_combo_id, "
            ~ "attribute_option_combo_id from " ~ operands_relation ~ " order by indicator_id, operand_alias") -%}
        {%- for row in operand_rows.rows -%}
            {%- do operands.setdefault(row[0], []).append(
                {'alias': row[1], 'de': row[2], 'coc': row[3], 'aoc': row[4]}) -%}
        {%- endfor -%}
    {%- endif -%}

    {%- if indicators | length == 0 %}
    select
        cast(null as {{ hp_type_text() }}) as indicator_id,
        cast(null as {{ hp_type_text() }}) as org_unit_id,
        cast(null as integer) as org_unit_level,
        cast(null as {{ hp_type_text() }}) as period_id,
        cast(null as {{ hp_type_text() }}) as period_type,
        cast(null as {{ hp_type_double() }}) as numerator,
        cast(null as {{ hp_type_double() }}) as denominator
    where 1 = 0
    {%- endif %}

    {%- for indicator in indicators %}
    select
        '{{ indicator.id }}' as indicator_id,
        org_unit_id,
        org_unit_level,
        period_id,
        period_type,
        cast({{ indicator.numerator }} as {{ hp_type_double() }}) as numerator,
        cast({{ indicator.denominator }} as {{ hp_type_double() }}) as denominator
    from (
        select
            org_unit_id,
            org_unit_level,
            period_id,
            period_type
            {%- for operand in operands.get(indicator.id, []) %},
            sum(case when data_element_id = '{{ operand.de }}'
                {%- if operand.coc %} and category_option_combo_id = '{{ operand.coc }}'{% endif %}
                {%- if operand.aoc %} and attribute_option_combo_id = '{{ operand.aoc }}'{% endif %}
                then cast(value as decimal(38, 9)) end) as {{ operand.alias }}
            {%- endfor %}
        from {{ aggregated_relation }}
        where data_element_id in (
            {%- for operand in operands.get(indicator.id, []) -%}
            '{{ operand.de }}'{{ ", " if not loop.last }}
            {%- endfor -%})
        group by org_unit_id, org_unit_level, period_id, period_type
    ) as operand_values
    {% if not loop.last %}union all{% endif %}
    {%- endfor %}
{% endmacro %}
